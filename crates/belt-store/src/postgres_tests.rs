//! What only the PostgreSQL store does: its errors, its listener, damaged rows. (What every
//! store does is in the conformance suite.)

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use belt_core::event::{EventBus, EventKind};
use belt_core::store::{DeadLetter, InputHash, RunRecord, RunStore, StoreError};
use belt_core::{LlmRequest, RunStatus, StepId, Tier};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};

use super::PgStore;
use crate::conformance::PgSchema;

fn record(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        pattern: "cascade".into(),
        task: "a task".into(),
        status: RunStatus::Running,
        started_at: chrono::Utc::now(),
        definition: Arc::from("{}"),
    }
}

fn step(name: &str) -> belt_core::store::StepRecord {
    let mut reply = belt_core::StepReply::new("out");
    reply.outcome.model = Arc::from("t/m");
    reply.outcome.attempts = 1;
    belt_core::store::StepRecord {
        step: StepId::new(name),
        tier: Tier::Worker,
        input_hash: InputHash::new(7),
        reply,
    }
}

/// The test server's URL with `user:password` and the database replaced.
fn url_as(base: &str, userinfo: &str, database: &str) -> String {
    let options = PgConnectOptions::from_str(base).unwrap();
    format!("postgres://{userinfo}@{}:{}/{database}", options.get_host(), options.get_port())
}

async fn open_err(url: &str) -> String {
    match PgStore::open(url).await {
        Ok(_) => panic!("{url} opened"),
        Err(e) => {
            assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_is_named_with_what_to_check() {
    let err = open_err("postgres://belt:secret@127.0.0.1:1/belt").await;
    assert!(
        err.contains(
            "cannot connect to PostgreSQL at 127.0.0.1:1: connection refused; is the server running? \
             check --store / BELT_STORE"
        ),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let err = open_err("postgres://belt@no-such-host.invalid/belt").await;
    assert!(err.contains("at no-such-host.invalid:5432: the host name does not resolve"), "{err}");
    let err = open_err("postgres://belt@[::1").await;
    assert!(err.contains("is not a PostgreSQL URL"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_or_an_unknown_database_says_which() {
    let base = tokio::task::spawn_blocking(belt_testkit::postgres).await.unwrap();
    let user = PgConnectOptions::from_str(&base).unwrap().get_username().to_string();
    let err = open_err(&url_as(&base, &format!("{user}:not-the-password"), "belt")).await;
    assert!(err.contains(&format!("refused the password of user `{user}`")), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    let userinfo =
        base.split_once("://").and_then(|(_, r)| r.rsplit_once('@')).map_or(user, |(u, _)| u.into());
    let err = open_err(&url_as(&base, &userinfo, "no_such_belt_db")).await;
    assert!(err.contains("has no database `no_such_belt_db`; create it"), "{err}");
}

/// A database a newer belt migrated (a migration this one does not know) is refused before
/// anything is written to it.
#[tokio::test]
async fn a_schema_from_a_newer_belt_is_refused() {
    let schema = PgSchema::new().await;
    drop(PgStore::open(&schema.url()).await.unwrap());
    let mut conn = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = open_err(&schema.url()).await;
    let known = super::known_version();
    assert!((1..999).contains(&known));
    let says =
        format!("was written by a newer belt (schema version 999, this belt knows {known}); upgrade belt");
    assert!(err.contains(&says), "{err}");
    assert!(err.contains(":***@"), "the store is named without its password: {err}");
}

/// A TCP proxy in front of the test server whose connections can be cut, as a network
/// failure or a server restart cuts them.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                links2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy { addr, up, links, task }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The connection lost between two steps: the step fails with an error that says so (no
/// panic, no hang), and the store works again once the server is reachable.
#[tokio::test]
async fn a_connection_lost_mid_run_is_an_error_and_the_store_recovers() {
    let schema = PgSchema::new().await;
    let options = PgConnectOptions::from_str(&schema.url()).unwrap();
    let target: SocketAddr = format!("{}:{}", options.get_host(), options.get_port()).parse().unwrap();
    let proxy = Proxy::start(target).await;
    let store =
        PgStore::open_with(options.port(proxy.addr.port()), "the proxied store".into()).await.unwrap();
    store.put_run(&record("r")).await.unwrap();
    store.put_step("r", &step("worker/1")).await.unwrap();

    proxy.cut();
    let started = std::time::Instant::now();
    let err = store.put_step("r", &step("worker/2")).await.expect_err("written with no connection");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let StoreError::Backend(text) = &err else { panic!("{err:?}") };
    assert!(text.contains(&format!("PostgreSQL at 127.0.0.1:{}", proxy.addr.port())), "{text}");
    assert!(text.contains("is the server running?"), "{text}");

    proxy.restore();
    store.put_step("r", &step("worker/2")).await.unwrap();
    assert_eq!(store.load_steps("r").await.unwrap().len(), 2);
}

/// The listener's connection is killed (a server restart, a proxy timeout): it reconnects,
/// and a follower still wakes promptly for what is appended afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_wake_after_the_listener_reconnects() {
    let schema = PgSchema::new().await;
    let app = format!("belt_follow_{}", schema.name);
    let follower =
        Arc::new(PgStore::open(&schema.url_with(&format!("&application_name={app}"))).await.unwrap());
    let writer = PgStore::open(&schema.url()).await.unwrap();
    writer.put_run(&record("r")).await.unwrap();
    // Start the listener, then kill every connection of the follower's store.
    assert!(follower.wait_events("r", 0, Duration::from_millis(300)).await.unwrap().is_empty());
    wait_until(|| follower.followers.listening.load(Ordering::SeqCst)).await;
    let mut admin = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "the listener's connection was there to kill");

    let waiting = {
        let follower = follower.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let got = follower.wait_events("r", 0, Duration::from_secs(30)).await.unwrap();
            (got.len(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bus = EventBus::new("r", 0);
    let mut rx = bus.subscribe();
    bus.emit(None, EventKind::PlanFallback { reason: "x".into(), templated: 1 });
    writer.append_events("r", &[rx.try_recv().unwrap()]).await.unwrap();
    let (n, waited) = waiting.await.unwrap();
    assert_eq!(n, 1);
    // Well under FOLLOW_RECHECK: woken by the notification, not by the periodic re-read.
    assert!(waited < Duration::from_millis(1500) + Duration::from_secs(3), "{waited:?}");
}

async fn wait_until(ready: impl Fn() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready after 10 s");
}

/// Rows a stray write damaged read as `StoreError::Damaged` naming the run and the column,
/// never a panic; the run can then be removed.
#[tokio::test]
async fn a_damaged_row_is_an_error_naming_the_run_and_the_column() {
    let cases: &[(&str, &str, &str)] = &[
        ("runs", "status = 'exploded'", "`exploded` is not a run status"),
        ("runs", "duration_ms = -1", "`duration_ms`: -1 is negative"),
        ("runs", "result_lz4 = '\\xffffffff00'", "`result_lz4`"),
        ("runs", "result_lz4 = '\\x0500000000'", "`result_lz4`"),
        ("steps", "input_tokens = -1", "`input_tokens` of step worker/1: -1 is negative"),
        ("steps", "attempts = 1099511627776", "`attempts` of step worker/1: too large"),
        ("steps", "output = '\\xff'", "`output` of step worker/1"),
        ("steps", "input_hash = 'zz'", "`input_hash` of step worker/1"),
        ("steps", "tool_calls = '[{'", "`tool_calls`"),
        ("steps", "reported_usage = '{'", "`reported_usage`"),
        ("events", "lines = '[1,2'", "an event does not decode"),
        ("events", "last_seq = -5", "`seq`"),
        ("dead_letters", "request = '{}'", "`request` of dead letter"),
        ("dead_letters", "attempts = -1", "`attempts`"),
    ];
    let schema = PgSchema::new().await;
    let store = PgStore::open(&schema.url()).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
    for (table, set, names) in cases {
        fill(&store).await;
        assert!(read_everything(&store).await.is_empty(), "the undamaged run reads back");
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET {set}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let errors = read_everything(&store).await;
        assert!(!errors.is_empty(), "{table} {set}: no read noticed the damage");
        for e in &errors {
            let StoreError::Damaged { run_id, store: at, .. } = e else { panic!("{table} {set}: {e:?}") };
            let text = e.to_string();
            assert!(text.contains(names), "{table} {set}: the message does not name {names}: {text}");
            assert_eq!(run_id.as_deref(), Some("r1"), "{table} {set}: {text}");
            assert!(!at.contains(":belt@"), "the store is named without its password: {at}");
        }
        assert!(store.delete_run("r1").await.unwrap(), "{table} {set}");
        sqlx::query("DELETE FROM dead_letters").execute(&mut admin).await.unwrap();
    }
    // A damaged cache entry is a miss.
    let key = InputHash::new(7);
    store.cache_put(key, &belt_core::StepReply::new("hi"), Duration::from_secs(60)).await.unwrap();
    sqlx::query("UPDATE cache SET reply = '{'").execute(&mut admin).await.unwrap();
    assert_eq!(store.cache_get(key).await.unwrap(), None);
}

/// Run `r1` with a step, events, a result and a dead letter.
async fn fill(store: &PgStore) {
    store.put_run(&record("r1")).await.unwrap();
    let mut s = step("worker/1");
    s.reply.tool_calls = vec![belt_core::llm::ToolCall {
        id: "c".into(),
        name: "add".into(),
        arguments: serde_json::json!({}),
    }];
    s.reply.outcome.reported_usage = Some(Box::new(belt_core::Usage::new(1, 2)));
    store.put_step("r1", &s).await.unwrap();
    let bus = EventBus::new("r1", 0);
    let mut rx = bus.subscribe();
    bus.emit(None, EventKind::PlanFallback { reason: "x".into(), templated: 1 });
    store.append_events("r1", &[rx.try_recv().unwrap()]).await.unwrap();
    let mut result = crate::tests::sample_result("r1");
    result.status = RunStatus::Completed;
    store.finish_run(&result).await.unwrap();
    let letter = DeadLetter {
        id: 0,
        run_id: "r1".into(),
        step: StepId::new("worker/2"),
        tier: Tier::Worker,
        error: "boom".into(),
        error_kind: "server_error".into(),
        attempts: 3,
        work: belt_core::store::LetterWork::Llm(LlmRequest::new("t/m", "hello")),
        created_at: chrono::Utc::now(),
    };
    store.put_dead_letter(&letter).await.unwrap();
}

async fn read_everything(store: &PgStore) -> Vec<StoreError> {
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
    errors
}

/// A chain of 200 steps, each recorded before the next, reads back whole from both stores.
/// (What a step costs is `belt-bench --store postgres://…`'s to say: see BENCHMARKS.md.)
#[tokio::test]
async fn a_chain_of_steps_reads_back_whole() {
    let schema = PgSchema::new().await;
    let store = PgStore::open(&schema.url()).await.unwrap();
    let dir = crate::tests::TempDir::new("chain");
    let sqlite = crate::SqliteStore::open(dir.db()).await.unwrap();
    let n = 200;
    for s in [&store as &dyn RunStore, &sqlite] {
        s.put_run(&record("r")).await.unwrap();
        for i in 0..n {
            s.put_step("r", &step(&format!("chain/{i:04}"))).await.unwrap();
        }
        assert_eq!(s.load_steps("r").await.unwrap().len(), n);
    }
}

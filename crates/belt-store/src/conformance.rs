//! The conformance suite: what every [`RunStore`] does, written once over `Arc<dyn
//! RunStore>` and run against the in-memory store, SQLite (a fresh file per test) and
//! PostgreSQL (a fresh schema per test in the test database, see [`PgSchema`], so the tests
//! run in parallel without seeing one another).
//!
//! Times that go through a store are whole microseconds here: PostgreSQL keeps no more.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use belt_core::event::{Event, EventBus, EventKind};
use belt_core::llm::ToolCall;
use belt_core::store::{
    CancelRequest, DeadLetter, InputHash, LEASE_TTL, Lease, LetterWork, RunRecord, RunStore, StepRecord,
    StoreError,
};
use belt_core::testing::ScriptedProvider;
use belt_core::{Cascade, LlmRequest, RunOptions, RunResult, RunStatus, StepId, Task, Tier, Usage};
use chrono::{DateTime, SubsecRound, Utc};

use crate::{MemoryStore, PgStore, SqliteStore};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

/// A store under test, and what it lives in (removed when dropped).
pub(crate) struct Fixture {
    pub store: Arc<dyn RunStore>,
    place: Place,
}

enum Place {
    Memory,
    Sqlite(crate::tests::TempDir),
    Postgres(PgSchema),
}

impl Fixture {
    pub async fn new(kind: Kind) -> Self {
        let place = match kind {
            Kind::Memory => Place::Memory,
            Kind::Sqlite => Place::Sqlite(crate::tests::TempDir::new("conformance")),
            Kind::Postgres => Place::Postgres(PgSchema::new().await),
        };
        let mut f = Fixture { store: Arc::new(MemoryStore::new()), place };
        f.store = f.open().await;
        f
    }

    /// The same store opened again, as another process would (the memory store: itself).
    pub async fn open(&self) -> Arc<dyn RunStore> {
        match &self.place {
            Place::Memory => self.store.clone(),
            Place::Sqlite(dir) => Arc::new(SqliteStore::open(dir.db()).await.unwrap()),
            Place::Postgres(schema) => Arc::new(PgStore::open(&schema.url()).await.unwrap()),
        }
    }
}

pub(crate) use belt_testkit::PgSchema;

/// Now, to the microsecond.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn record(run_id: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        pattern: "cascade".into(),
        task: "a task".into(),
        status,
        started_at: now(),
        definition: Arc::from(format!("{{\"run\":\"{run_id}\"}}")),
    }
}

/// A step with every field set to something that is not its default.
fn step(name: &str, cost: f64) -> StepRecord {
    StepRecord {
        step: StepId::new(name),
        tier: Tier::Worker,
        input_hash: InputHash::new(0xdead_beef_u128 << 64 | 7),
        reply: belt_core::StepReply {
            text: Arc::from(format!("output of {name}: ünïcødé, a NUL \0 and a quote '\"")),
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
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "add".into(),
                arguments: serde_json::json!({"a": 2, "b": 3}),
            }],
        },
    }
}

fn result(run_id: &str, status: RunStatus) -> RunResult {
    RunResult {
        run_id: run_id.into(),
        status,
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

/// `n` events of run `run_id` numbered from `from + 1`.
fn events(run_id: &str, from: u64, n: usize) -> Vec<Arc<Event>> {
    let bus = EventBus::new(run_id, from);
    let mut rx = bus.subscribe();
    for i in 0..n {
        let step = StepId::new(format!("worker/{i:03}"));
        bus.emit(Some(&step), EventKind::PlanFallback { reason: format!("r{i}"), templated: i });
    }
    (0..n).map(|_| rx.try_recv().unwrap()).collect()
}

fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

const TTL: Duration = Duration::from_secs(10);

async fn run_records_round_trip_and_resume(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    assert_eq!(s.get_run("r").await.unwrap(), None);
    let first = record("r", RunStatus::Running);
    s.put_run(&first).await.unwrap();
    assert_eq!(s.get_run("r").await.unwrap().as_ref(), Some(&first));
    // Resumed: status, task and definition change; the start time stays the first one.
    let again = RunRecord {
        status: RunStatus::Queued,
        task: "another task".into(),
        definition: Arc::from("{\"v\":2}"),
        started_at: first.started_at + chrono::Duration::seconds(5),
        ..first.clone()
    };
    s.put_run(&again).await.unwrap();
    let got = s.get_run("r").await.unwrap().unwrap();
    assert_eq!(got, RunRecord { started_at: first.started_at, ..again }, "{kind:?}");
    // Seen from another process sharing the store.
    assert_eq!(f.open().await.get_run("r").await.unwrap(), Some(got));
    // A lease or a step taken before the run was recorded is not a run.
    s.claim("leased", "me", TTL, None).await.unwrap();
    s.put_step("stepped", &step("worker/1", 0.1)).await.unwrap();
    assert_eq!(s.get_run("leased").await.unwrap(), None);
    assert_eq!(s.get_run("stepped").await.unwrap(), None);
    let listed: Vec<String> = s.list_runs(10).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(listed, ["r"], "{kind:?}: placeholders are not listed");
    assert_eq!(s.load_steps("stepped").await.unwrap().len(), 1, "a step of an unrecorded run is kept");
    // Only a store several processes share shares limits and budget pools.
    let shared = matches!(kind, Kind::Postgres);
    assert_eq!((s.shared_limits().is_some(), s.budget_pools().is_some()), (shared, shared), "{kind:?}");
}

async fn steps_round_trip_with_every_field(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    let steps: Vec<StepRecord> =
        (1..=60).map(|i| step(&format!("worker/{i:03}"), 0.001 * i as f64)).collect();
    // Concurrently, as a fan-out writes them.
    let puts = steps.iter().map(|st| {
        let s = s.clone();
        let st = st.clone();
        tokio::spawn(async move { s.put_step("r", &st).await })
    });
    for p in puts.collect::<Vec<_>>() {
        p.await.unwrap().unwrap();
    }
    let mut loaded = s.load_steps("r").await.unwrap();
    loaded.sort_by(|a, b| a.step.cmp(&b.step));
    assert_eq!(loaded, steps, "{kind:?}");
    // A default-valued step (no tool calls, no reported usage, no finish reason) too.
    let mut plain = step("plain", 0.0);
    plain.reply = belt_core::StepReply::new("");
    plain.reply.outcome.model = Arc::from("t/m");
    s.put_step("r", &plain).await.unwrap();
    // Recording a step again replaces its record (the SQLite store always did).
    let mut redo = step("worker/001", 9.0);
    redo.reply.text = Arc::from("second take");
    s.put_step("r", &redo).await.unwrap();
    let loaded = s.load_steps("r").await.unwrap();
    assert_eq!(loaded.len(), 61, "{kind:?}: a step is recorded once");
    assert_eq!(loaded.iter().find(|x| x.step.as_str() == "worker/001"), Some(&redo), "{kind:?}");
    assert_eq!(loaded.iter().find(|x| x.step.as_str() == "plain"), Some(&plain), "{kind:?}");
    assert!(s.load_steps("other").await.unwrap().is_empty());
    let listed = s.list_runs(1).await.unwrap();
    assert_eq!(listed[0].steps, 61);
    let cost: f64 = loaded.iter().map(|x| x.reply.outcome.cost_usd).sum();
    assert!((listed[0].cost_usd - cost).abs() < 1e-9, "{kind:?}: unfinished runs cost what their steps did");
}

async fn events_append_and_read_after_any_seq(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    assert_eq!(s.last_seq("r").await.unwrap(), 0);
    assert!(s.events("r", 0).await.unwrap().is_empty());
    let all = events("r", 0, 120);
    // Batches of 1 to 9 events, as the engine appends them.
    let mut at = 0;
    for size in (1..10).cycle() {
        let end = (at + size).min(all.len());
        s.append_events("r", &all[at..end]).await.unwrap();
        at = end;
        if at == all.len() {
            break;
        }
    }
    s.append_events("r", &[]).await.unwrap();
    assert_eq!(s.last_seq("r").await.unwrap(), 120);
    for after in [0, 1, 2, 5, 6, 44, 45, 46, 119, 120, 500] {
        let got = s.events("r", after).await.unwrap();
        let want: Vec<u64> = (after + 1..=120).collect();
        assert_eq!(seqs(&got), want, "{kind:?}: events after {after}");
        assert_eq!(got.first().map(|e| (**e).clone()), all.get(after as usize).map(|e| (**e).clone()));
    }
    // Events of a run not recorded (yet) are kept too; other runs are not affected.
    s.append_events("x", &events("x", 0, 3)).await.unwrap();
    assert_eq!(seqs(&s.events("x", 1).await.unwrap()), [2, 3]);
    assert_eq!(s.last_seq("r").await.unwrap(), 120);
    assert_eq!(f.open().await.events("r", 119).await.unwrap().len(), 1, "seen by another process");
}

async fn finished_runs_keep_their_result_and_free_their_lease(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.claim("r", "me", TTL, None).await.unwrap();
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    s.put_step("r", &step("worker/1", 0.25)).await.unwrap();
    assert_eq!(s.get_result("r").await.unwrap(), None);
    let done = result("r", RunStatus::Completed);
    s.finish_run(&done).await.unwrap();
    assert_eq!(s.get_result("r").await.unwrap(), Some(done), "{kind:?}");
    assert_eq!(s.get_run("r").await.unwrap().unwrap().status, RunStatus::Completed);
    let listed = &s.list_runs(5).await.unwrap()[0];
    assert_eq!((listed.status, listed.cost_usd, listed.duration_ms), (RunStatus::Completed, 0.5, Some(10)));
    assert_eq!(listed.owner, None, "{kind:?}: finishing ends the lease");
    assert!(!s.heartbeat("r", "me").await.unwrap().held);
    s.claim("r", "someone", TTL, None).await.unwrap();
    assert_eq!(s.get_result("nope").await.unwrap(), None);
}

async fn list_runs_newest_first_with_live_and_interrupted_runs(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    let base = now() - chrono::Duration::seconds(100);
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        let r = RunRecord {
            started_at: base + chrono::Duration::seconds(i as i64),
            ..record(id, RunStatus::Running)
        };
        s.put_run(&r).await.unwrap();
    }
    s.claim("c", "driver", TTL, None).await.unwrap();
    s.put_run(&RunRecord { status: RunStatus::Queued, ..s.get_run("b").await.unwrap().unwrap() })
        .await
        .unwrap();
    let list = s.list_runs(10).await.unwrap();
    let ids: Vec<&str> = list.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["d", "c", "b", "a"], "{kind:?}: newest first");
    let status =
        |id: &str| list.iter().find(|r| r.run_id == id).map(|r| (r.status, r.owner.clone())).unwrap();
    // Running without a lease: nobody drives it.
    assert_eq!(status("a"), (RunStatus::Interrupted, None), "{kind:?}");
    assert_eq!(status("b"), (RunStatus::Queued, None));
    assert_eq!(status("c"), (RunStatus::Running, Some("driver".into())), "{kind:?}");
    assert_eq!(status("d").0, RunStatus::Interrupted);
    assert_eq!(s.list_runs(2).await.unwrap().len(), 2, "limited");
    assert_eq!(list[0].started_at, base + chrono::Duration::seconds(3));
}

async fn claims_admit_one_driver(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.claim("r", "a", TTL, None).await.unwrap();
    match s.claim("r", "b", TTL, None).await {
        Err(StoreError::Busy { run_id, owner, age_ms }) => {
            assert_eq!((run_id.as_str(), owner.as_str()), ("r", "a"));
            assert!(age_ms < 5_000, "{kind:?}: {age_ms}");
        }
        other => panic!("{kind:?}: not busy: {other:?}"),
    }
    // The same owner may claim again; a known-dead owner may be replaced.
    s.claim("r", "a", TTL, None).await.unwrap();
    s.claim("r", "b", TTL, Some("a")).await.unwrap();
    assert!(s.claim("r", "a", TTL, None).await.is_err(), "{kind:?}: b holds it now");
    // An expired lease is free to take.
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.claim("r", "c", Duration::from_millis(5), None).await.unwrap();
    // Another process sees the lease.
    assert!(matches!(f.open().await.claim("r", "d", TTL, None).await, Err(StoreError::Busy { .. })));
}

async fn heartbeats_tell_whether_the_lease_is_held_and_a_cancel_asked(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    s.claim("r", "a", TTL, None).await.unwrap();
    assert_eq!(s.heartbeat("r", "a").await.unwrap(), Lease { held: true, cancel_requested: false });
    // Taken over by b (a's heartbeats were thought lost): a learns it lost the run.
    s.claim("r", "b", TTL, Some("a")).await.unwrap();
    assert!(!s.heartbeat("r", "a").await.unwrap().held, "{kind:?}");
    assert_eq!(s.heartbeat("r", "b").await.unwrap(), Lease { held: true, cancel_requested: false });
    assert_eq!(s.request_cancel("r").await.unwrap(), CancelRequest::WasRunning);
    assert_eq!(
        s.heartbeat("r", "b").await.unwrap(),
        Lease { held: true, cancel_requested: true },
        "{kind:?}"
    );
    assert!(f.open().await.heartbeat("r", "b").await.unwrap().cancel_requested, "seen by another process");
    s.finish_run(&result("r", RunStatus::Cancelled)).await.unwrap();
    assert!(!s.heartbeat("r", "b").await.unwrap().held);
    // A run started again after its end has no cancel pending.
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    s.claim("r", "c", TTL, None).await.unwrap();
    assert_eq!(
        s.heartbeat("r", "c").await.unwrap(),
        Lease { held: true, cancel_requested: false },
        "{kind:?}"
    );
    assert!(!s.heartbeat("unknown", "c").await.unwrap().held);
}

/// Queued runs `q00`.. accepted one after the other (start times in that order).
async fn queue(s: &Arc<dyn RunStore>, n: usize) -> Vec<String> {
    let base = now() - chrono::Duration::seconds(1000);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("q{i:02}");
        let r = RunRecord {
            started_at: base + chrono::Duration::seconds(i as i64),
            ..record(&id, RunStatus::Queued)
        };
        s.put_run(&r).await.unwrap();
        ids.push(id);
    }
    ids
}

fn ids(runs: &[RunRecord]) -> Vec<String> {
    runs.iter().map(|r| r.run_id.clone()).collect()
}

async fn take_runs_takes_the_oldest_free_runs_once(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    queue(s, 8).await;
    // Not taken: a run whose cancel was asked, one driven under a live lease, a
    // placeholder, a finished run.
    assert_eq!(s.request_cancel("q01").await.unwrap(), CancelRequest::WasQueued);
    s.claim("q02", "resumer", TTL, None).await.unwrap();
    s.put_run(&RunRecord { status: RunStatus::Running, ..s.get_run("q02").await.unwrap().unwrap() })
        .await
        .unwrap();
    s.claim("placeholder", "x", Duration::ZERO, None).await.unwrap();
    s.finish_run(&result("q03", RunStatus::Completed)).await.unwrap();
    // A running run nobody drives (its driver died before its first lease) is taken.
    s.put_run(&record("orphan", RunStatus::Running)).await.unwrap();

    let taken = s.take_runs("w1", 3).await.unwrap();
    assert_eq!(ids(&taken), ["q00", "q04", "q05"], "{kind:?}: oldest first, limited");
    assert!(taken.iter().all(|r| r.status == RunStatus::Running), "{kind:?}");
    assert_eq!(taken[0].definition.as_ref(), "{\"run\":\"q00\"}");
    assert_eq!(s.heartbeat("q00", "w1").await.unwrap(), Lease { held: true, cancel_requested: false });
    assert_eq!(s.get_run("q04").await.unwrap().unwrap().status, RunStatus::Running);
    let rest = s.take_runs("w2", 10).await.unwrap();
    assert_eq!(ids(&rest), ["q06", "q07", "orphan"], "{kind:?}");
    assert!(s.take_runs("w3", 10).await.unwrap().is_empty(), "{kind:?}: never twice");
    assert!(s.take_runs("w3", 0).await.unwrap().is_empty());
    let listed = s.list_runs(20).await.unwrap();
    let owner = |id: &str| listed.iter().find(|r| r.run_id == id).and_then(|r| r.owner.clone());
    assert_eq!((owner("q05"), owner("q06")), (Some("w1".into()), Some("w2".into())));
}

async fn concurrent_takers_get_disjoint_runs(kind: Kind) {
    let f = Fixture::new(kind).await;
    let q = queue(&f.store, 50).await;
    let mut takers = Vec::new();
    for w in 0..4 {
        // Each taker on a store of its own, as separate processes.
        let s = f.open().await;
        takers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.take_runs(&format!("w{w}"), 3).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(ids(&got));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = HashSet::new();
    let mut total = 0;
    for t in takers {
        let mine = t.await.unwrap();
        total += mine.len();
        all.extend(mine);
    }
    assert_eq!(total, 50, "{kind:?}: a run was taken twice");
    assert_eq!(all, q.into_iter().collect::<HashSet<_>>(), "{kind:?}: every run taken");
}

async fn released_runs_go_back_to_the_queue(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    queue(s, 2).await;
    assert_eq!(ids(&s.take_runs("w1", 2).await.unwrap()), ["q00", "q01"]);
    assert!(!s.release("q00", "w2").await.unwrap(), "{kind:?}: not w2's to release");
    assert!(s.release("q00", "w1").await.unwrap());
    assert!(!s.release("q00", "w1").await.unwrap(), "{kind:?}: released once");
    assert_eq!(s.get_run("q00").await.unwrap().unwrap().status, RunStatus::Queued);
    assert!(!s.heartbeat("q00", "w1").await.unwrap().held);
    assert_eq!(ids(&s.take_runs("w2", 5).await.unwrap()), ["q00"], "{kind:?}: taken again");
    // Handed back after a cancel was asked: it ends cancelled, and no one takes it.
    assert_eq!(s.request_cancel("q01").await.unwrap(), CancelRequest::WasRunning);
    assert!(s.release("q01", "w1").await.unwrap());
    assert_eq!(s.get_run("q01").await.unwrap().unwrap().status, RunStatus::Cancelled, "{kind:?}");
    assert!(s.take_runs("w3", 5).await.unwrap().is_empty());
    assert!(!s.release("nope", "w1").await.unwrap());
}

async fn cancel_requests_in_each_state(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    assert_eq!(s.request_cancel("unknown").await.unwrap(), CancelRequest::NotLive);
    queue(s, 2).await;
    assert_eq!(s.request_cancel("q00").await.unwrap(), CancelRequest::WasQueued);
    assert_eq!(s.request_cancel("q00").await.unwrap(), CancelRequest::WasQueued, "asking twice is harmless");
    assert!(!s.take_queued("q00", "w").await.unwrap(), "{kind:?}: a cancelled queued run is not taken");
    assert_eq!(ids(&s.take_runs("w", 5).await.unwrap()), ["q01"], "{kind:?}");
    assert_eq!(s.request_cancel("q01").await.unwrap(), CancelRequest::WasRunning);
    s.finish_run(&result("q01", RunStatus::Cancelled)).await.unwrap();
    assert_eq!(s.request_cancel("q01").await.unwrap(), CancelRequest::NotLive, "{kind:?}: finished");
}

async fn take_queued_hands_a_queued_run_to_one_taker(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    let q = queue(s, 3).await;
    let order = ids(&s.queued_runs(10).await.unwrap());
    assert_eq!(order, q, "{kind:?}: oldest first");
    assert_eq!(ids(&s.queued_runs(1).await.unwrap()), ["q00"]);
    assert!(s.take_queued("q00", "server-1").await.unwrap());
    assert!(!s.take_queued("q00", "server-2").await.unwrap(), "{kind:?}: taken once");
    assert!(!s.take_queued("nope", "server-2").await.unwrap());
    assert!(s.heartbeat("q00", "server-1").await.unwrap().held);
    assert!(s.claim("q00", "server-2", TTL, None).await.is_err());
    // A process that claimed a queued run first (`belt resume`) keeps it from the others.
    s.claim("q01", "resume", TTL, None).await.unwrap();
    assert!(!s.take_queued("q01", "server-1").await.unwrap(), "{kind:?}: under another's live lease");
    assert!(s.take_queued("q01", "resume").await.unwrap(), "{kind:?}: but its holder may take it");
    assert_eq!(ids(&s.queued_runs(10).await.unwrap()), ["q02"]);
}

async fn deleting_a_run_removes_everything_of_it(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    for id in ["r", "keep"] {
        s.put_run(&record(id, RunStatus::Running)).await.unwrap();
        s.put_step(id, &step("worker/1", 0.1)).await.unwrap();
        s.append_events(id, &events(id, 0, 3)).await.unwrap();
        s.put_dead_letter(&letter(id, "worker/2")).await.unwrap();
    }
    s.finish_run(&result("r", RunStatus::Completed)).await.unwrap();
    assert!(s.delete_run("r").await.unwrap());
    assert_eq!(s.get_run("r").await.unwrap(), None);
    assert_eq!(s.get_result("r").await.unwrap(), None, "{kind:?}");
    assert!(s.load_steps("r").await.unwrap().is_empty());
    assert!(s.events("r", 0).await.unwrap().is_empty());
    assert_eq!(s.last_seq("r").await.unwrap(), 0);
    let letters = s.dead_letters().await.unwrap();
    assert_eq!(letters.iter().map(|l| l.run_id.as_str()).collect::<Vec<_>>(), ["keep"], "{kind:?}");
    assert!(!s.delete_run("r").await.unwrap(), "gone already");
    assert_eq!(s.load_steps("keep").await.unwrap().len(), 1, "other runs are untouched");
    assert_eq!(s.events("keep", 0).await.unwrap().len(), 3);
    // Recorded again after removal: a new run, with nothing of the old one.
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    s.put_step("r", &step("worker/9", 0.1)).await.unwrap();
    assert_eq!(s.load_steps("r").await.unwrap().len(), 1);
}

fn letter(run_id: &str, step: &str) -> DeadLetter {
    DeadLetter {
        id: 0,
        run_id: run_id.into(),
        step: StepId::new(step),
        tier: Tier::Worker,
        error: "boom".into(),
        error_kind: "server_error".into(),
        attempts: 3,
        work: LetterWork::Llm(LlmRequest::new("t/m", "hello").max_tokens(9)),
        created_at: now(),
    }
}

async fn dead_letters_are_kept_until_resolved(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    assert!(s.dead_letters().await.unwrap().is_empty());
    // An LLM call's letter, and a tool call's (each reads back as what it was).
    let a = letter("r", "worker/003");
    let tool_call = ToolCall {
        id: "c1".into(),
        name: "files_read".into(),
        arguments: serde_json::json!({"path": "/tmp/x"}),
    };
    let b = DeadLetter { work: LetterWork::Tool { tool_call }, ..letter("r", "worker/004/round/01/tool/1") };
    let ida = s.put_dead_letter(&a).await.unwrap();
    let idb = s.put_dead_letter(&b).await.unwrap();
    assert_ne!(ida, idb);
    let all = s.dead_letters().await.unwrap();
    assert_eq!(all, [DeadLetter { id: ida, ..a }, DeadLetter { id: idb, ..b.clone() }], "{kind:?}");
    s.resolve_dead_letter(ida).await.unwrap();
    assert_eq!(s.dead_letters().await.unwrap(), [DeadLetter { id: idb, ..b }]);
    s.resolve_dead_letter(12345).await.unwrap();
    assert_eq!(s.dead_letters().await.unwrap().len(), 1);
}

async fn cached_replies_expire(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    let key = InputHash::new(42);
    let mut reply = belt_core::StepReply::new("hi");
    reply.outcome.model = Arc::from("t/m");
    reply.tool_calls = step("x", 0.0).reply.tool_calls;
    assert_eq!(s.cache_get(key).await.unwrap(), None);
    s.cache_put(key, &reply, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.cache_get(key).await.unwrap(), Some(reply.clone()), "{kind:?}");
    assert_eq!(s.cache_get(InputHash::new(43)).await.unwrap(), None);
    let mut other = reply.clone();
    other.text = Arc::from("newer");
    s.cache_put(key, &other, Duration::from_millis(300)).await.unwrap();
    assert_eq!(s.cache_get(key).await.unwrap(), Some(other), "{kind:?}: replaced");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.cache_get(key).await.unwrap(), None, "{kind:?}: expired");
    s.cache_put(key, &reply, Duration::ZERO).await.unwrap();
    assert_eq!(s.cache_get(key).await.unwrap(), None, "{kind:?}: born expired");
    s.cache_put(key, &reply, Duration::MAX).await.unwrap();
    assert_eq!(s.cache_get(key).await.unwrap(), Some(reply), "{kind:?}: a TTL too long for any clock");
}

async fn wait_events_returns_at_once_wakes_on_append_and_times_out(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    let first = events("r", 0, 4);
    s.append_events("r", &first[..2]).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(seqs(&s.wait_events("r", 0, Duration::from_secs(20)).await.unwrap()), [1, 2]);
    assert!(started.elapsed() < Duration::from_secs(2), "{kind:?}: events there are returned at once");

    // Appended by another process while this one waits.
    let writer = f.open().await;
    let rest = first[2..].to_vec();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.append_events("r", &rest).await.unwrap();
    });
    let started = tokio::time::Instant::now();
    let got = s.wait_events("r", 2, Duration::from_secs(20)).await.unwrap();
    let waited = started.elapsed();
    append.await.unwrap();
    assert_eq!(seqs(&got), [3, 4], "{kind:?}");
    assert!(waited < Duration::from_secs(3), "{kind:?}: woke after {waited:?} for a 20 s wait");

    // Nothing comes: empty at the timeout, not much later.
    let started = tokio::time::Instant::now();
    assert!(s.wait_events("r", 4, Duration::from_millis(400)).await.unwrap().is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "{kind:?}: {waited:?}");
}

/// A run resumes from the store in another process without paying for its completed
/// steps again (the engine over each store).
async fn an_unfinished_run_resumes_without_calling_again(kind: Kind) {
    let f = Fixture::new(kind).await;
    let options = |p: &Arc<ScriptedProvider>, store: Arc<dyn RunStore>| {
        let mut o = RunOptions::default().with_provider(p.clone()).with_store(store).concurrency(4);
        o.run_id = Some("run-r".into());
        o
    };
    // First process: workers 008-012 never answer; it stops after the others are done.
    let slow = (8..=12).fold(ScriptedProvider::new("t"), |p, i| {
        p.delay_for(&format!("worker/{i:03}"), Duration::from_secs(600))
    });
    let first = Arc::new(slow);
    let mut handle =
        belt_core::run(Cascade::new(12, "t/m"), Task::new("task"), options(&first, f.store.clone()))
            .await
            .unwrap();
    let mut events = handle.events().unwrap();
    let mut done = 0;
    while let Some(e) = events.recv().await {
        if e.kind.type_name() == "step_completed" {
            done += 1;
            if done == 8 {
                break; // decompose and workers 001-007
            }
        }
    }
    handle.cancel();
    assert_eq!(handle.result().await.status, RunStatus::Cancelled);

    let second = Arc::new(ScriptedProvider::new("t"));
    let store = f.open().await;
    let r2 = belt_core::run(Cascade::new(12, "t/m"), Task::new("task"), options(&second, store.clone()))
        .await
        .unwrap()
        .result()
        .await;
    assert_eq!(r2.status, RunStatus::Completed, "{kind:?}: {}", r2.stop_reason);
    assert_eq!(second.calls("decompose"), 0, "{kind:?}");
    for i in 1..=7 {
        assert_eq!(
            second.calls(&format!("worker/{i:03}")),
            0,
            "{kind:?}: worker/{i:03} was paid for already"
        );
    }
    assert_eq!(second.total_calls(), 5 + 2 + 1, "{kind:?}");
    assert_eq!(store.get_result("run-r").await.unwrap().map(|r| r.status), Some(RunStatus::Completed));
}

/// The one slow case: a lease that is not renewed expires after [`LEASE_TTL`], by the
/// store's clock; the run then shows as interrupted and a worker takes it over.
async fn an_expired_lease_frees_the_run(kind: Kind) {
    let f = Fixture::new(kind).await;
    let s = &f.store;
    s.put_run(&record("r", RunStatus::Running)).await.unwrap();
    s.claim("r", "dead", TTL, None).await.unwrap();
    assert!(s.take_runs("w", 5).await.unwrap().is_empty(), "{kind:?}: the lease is live");
    tokio::time::sleep(LEASE_TTL + Duration::from_millis(500)).await;
    assert_eq!(s.list_runs(5).await.unwrap()[0].status, RunStatus::Interrupted, "{kind:?}");
    assert_eq!(ids(&s.take_runs("w", 5).await.unwrap()), ["r"], "{kind:?}");
    assert!(!s.heartbeat("r", "dead").await.unwrap().held, "{kind:?}: the old driver lost it");
    assert_eq!(s.list_runs(5).await.unwrap()[0].status, RunStatus::Running);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::Memory).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Kind::Postgres).await })*
        }
    };
}

conformance!(
    run_records_round_trip_and_resume,
    steps_round_trip_with_every_field,
    events_append_and_read_after_any_seq,
    finished_runs_keep_their_result_and_free_their_lease,
    list_runs_newest_first_with_live_and_interrupted_runs,
    claims_admit_one_driver,
    heartbeats_tell_whether_the_lease_is_held_and_a_cancel_asked,
    take_runs_takes_the_oldest_free_runs_once,
    concurrent_takers_get_disjoint_runs,
    released_runs_go_back_to_the_queue,
    cancel_requests_in_each_state,
    take_queued_hands_a_queued_run_to_one_taker,
    deleting_a_run_removes_everything_of_it,
    dead_letters_are_kept_until_resolved,
    cached_replies_expire,
    wait_events_returns_at_once_wakes_on_append_and_times_out,
    an_unfinished_run_resumes_without_calling_again,
    an_expired_lease_frees_the_run,
);

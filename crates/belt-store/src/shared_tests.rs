//! Limits and budget pools shared through PostgreSQL, with two `PgShared` standing for two
//! processes on one database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use belt_core::budget::{Amount, Budget};
use belt_core::limits::{Limits, SharedLimits};
use belt_core::shared::{BudgetPools, PoolCaps};

use super::PgStore;
use super::shared::PgShared;
use crate::conformance::PgSchema;

/// Two processes' shares of one database (the schema made by the store's migrations).
async fn two(schema: &PgSchema) -> (Arc<PgShared>, Arc<PgShared>, PgStore) {
    let store = PgStore::open(&schema.url()).await.unwrap();
    let a = PgShared::start(store.pool().clone(), "test:a".into()).await.unwrap();
    let b = PgShared::start(store.pool().clone(), "test:b".into()).await.unwrap();
    (a, b, store)
}

#[tokio::test]
async fn a_concurrency_cap_holds_across_processes_and_a_dead_ones_slots_come_back() {
    let schema = PgSchema::new().await;
    let (a, b, store) = two(&schema).await;
    let limits = Limits { max_concurrency: Some(3), ..Limits::default() };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(a.acquire("p", &limits, 10).await.unwrap());
    }
    // The fourth, from the other process, waits until one comes back.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.acquire("p", &limits, 10).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a fourth slot was handed out under a cap of 3");
    a.release(held.pop().unwrap(), &limits, 10, None).await.unwrap();
    let fourth = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    // Process a dies holding two: its liveness lapses and they are reclaimed.
    drop(a);
    sqlx::query(
        "UPDATE belt_processes SET heartbeat = heartbeat - interval '1 hour' WHERE holder = 'test:a'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let started = Instant::now();
    let one = b.acquire("p", &limits, 10).await.unwrap();
    let two_more = b.acquire("p", &limits, 10).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "the dead process's slots came back at once");
    drop((fourth, one, two_more));
}

#[tokio::test]
async fn requests_per_minute_and_pauses_hold_across_processes() {
    let schema = PgSchema::new().await;
    let (a, b, _store) = two(&schema).await;
    // 600 a minute: a burst of 600, then one every 0.1 s, whichever process asks.
    let limits = Limits { rpm: Some(600), ..Limits::default() };
    let started = Instant::now();
    let (x, y) = tokio::join!(
        async {
            for _ in 0..310 {
                a.acquire("p", &limits, 0).await.unwrap();
            }
        },
        async {
            for _ in 0..310 {
                b.acquire("p", &limits, 0).await.unwrap();
            }
        }
    );
    let _ = (x, y);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1800), "620 requests at 600 a minute took {waited:?}");

    // A 429 seen by one process pauses the other's next call.
    let ticket = a.acquire("q", &limits, 0).await.unwrap();
    a.release(ticket, &limits, 0, Some(Duration::from_millis(800))).await.unwrap();
    let started = Instant::now();
    b.acquire("q", &limits, 0).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the pause was not obeyed: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_pool_is_never_passed_and_a_dead_processs_reservations_count_as_spent() {
    let schema = PgSchema::new().await;
    let (a, b, store) = two(&schema).await;
    let caps =
        PoolCaps { per_day: Budget { max_calls: Some(10), ..Budget::default() }, ..PoolCaps::default() };
    let one = Amount { calls: 1, tokens: 100, cost_usd: 0.01 };
    // Twenty reservations race from two processes: ten fit.
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..20 {
        let who = if i % 2 == 0 { a.clone() } else { b.clone() };
        tries.spawn(async move { (i % 2 == 0, who.reserve("team", &caps, one).await.unwrap()) });
    }
    // Which process got each: the race decides, not the order asked.
    let granted: Vec<(bool, i64)> =
        tries.join_all().await.into_iter().filter_map(|(by_a, r)| r.ok().map(|id| (by_a, id))).collect();
    assert_eq!(granted.len(), 10);
    // Settled below the reservation: room again.
    let (settled_by_a, settled) = granted[0];
    a.settle("team", settled, Amount { calls: 1, tokens: 10, cost_usd: 0.001 }).await.unwrap();
    let held_by_a = granted.iter().filter(|(by_a, _)| *by_a).count() as u64 - u64::from(settled_by_a);
    let state = b.pools().await.unwrap();
    let day = state.iter().find(|s| s.period == "day").unwrap();
    assert_eq!((day.spent.calls, day.reserved.calls), (1, 9));
    // Process a dies with its reservations: they are booked as spent, at their worst case.
    drop(a);
    sqlx::query(
        "UPDATE belt_processes SET heartbeat = heartbeat - interval '1 hour' WHERE holder = 'test:a'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let refused = b.reserve("team", &caps, one).await.unwrap().unwrap_err();
    assert_eq!(refused.period, "day");
    assert!(refused.to_string().contains("budget pool `team`, this day's cap"), "{refused}");
    let state = b.pools().await.unwrap();
    let day = state.iter().find(|s| s.period == "day").unwrap();
    assert_eq!(day.spent.calls + day.reserved.calls, 10, "{state:?}");
    assert_eq!(day.spent.calls, 1 + held_by_a, "the dead process's reservations were booked: {state:?}");
}

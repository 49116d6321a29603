//! What one step's commit costs: the SQLite store's `put_step` in a chain (each step waits
//! for the previous one's commit, as workload C of `belt-bench` does), next to the least
//! SQLite itself needs for a one-row transaction on this machine (WAL, `synchronous =
//! NORMAL`, prepared statements, automatic checkpoints), and `put_step` from 64 tasks at
//! once (the group commit).
//!
//! ```sh
//! cargo bench -p belt-store --bench commit
//! ```
#![allow(clippy::unwrap_used)] // a benchmark or an example: it stops at the first failure

use std::path::Path;
use std::sync::Arc;

use belt_core::store::{InputHash, RunStore, StepRecord};
use belt_core::{StepId, Tier, Usage};
use belt_store::SqliteStore;

const STEPS: usize = 10_000;
const REPEAT: usize = 5;

fn main() {
    let dir = std::env::temp_dir().join(format!("belt-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "{STEPS} one-row commits, CPU µs per commit (user + system, whole process), median of {REPEAT}:"
    );
    let floor = median(|i| raw_sqlite(&dir.join(format!("raw-{i}.db"))));
    println!("  SQLite alone (rusqlite, one thread)        {floor:6.2}");
    let one = median(|i| rt.block_on(chain(&dir.join(format!("chain-{i}.db")), 1)));
    println!("  put_step, a chain                           {one:6.2}");
    let group = median(|i| rt.block_on(chain(&dir.join(format!("group-{i}.db")), 64)));
    println!("  put_step, 64 at once                        {group:6.2}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(mut f: impl FnMut(usize) -> f64) -> f64 {
    let mut v: Vec<f64> = (0..REPEAT).map(&mut f).collect();
    v.sort_by(f64::total_cmp);
    v[REPEAT / 2]
}

fn record(i: usize) -> StepRecord {
    StepRecord {
        step: StepId::new(format!("chain/{i:05}")),
        tier: Tier::Worker,
        input_hash: InputHash::new(0x1234_5678_9abc_def0_u128 << 32 | i as u128),
        reply: belt_core::StepReply {
            text: Arc::from(format!("[simulated] step {i}: {}", "a finding of some length ".repeat(6))),
            outcome: belt_core::StepOutcome {
                model: Arc::from("simulated/fast"),
                usage: Usage {
                    input_tokens: 120,
                    output_tokens: 16,
                    cache_read_tokens: 0,
                    cache_write_tokens: 0,
                    reasoning_tokens: 0,
                },
                cost_usd: 0.000_12,
                attempts: 1,
                duration_ms: 0,
                finish_reason: Some(Arc::from("stop")),
                unpriced: false,
                ..Default::default()
            },
            simulated: true,
            tool_calls: Vec::new(),
        },
    }
}

/// `put_step` of every record, `width` at a time; CPU µs per record.
async fn chain(path: &Path, width: usize) -> f64 {
    let store = Arc::new(SqliteStore::open(path).await.expect("open the store"));
    let records: Vec<StepRecord> = (0..STEPS).map(record).collect();
    let started = cpu_seconds();
    if width == 1 {
        // On the runtime's thread, one after the other, as a chain's steps run.
        for r in &records {
            store.put_step("run", r).await.expect("put_step");
        }
    }
    for wave in records.chunks(width).filter(|_| width > 1) {
        let tasks: Vec<_> = wave
            .iter()
            .cloned()
            .map(|r| {
                let store = store.clone();
                tokio::spawn(async move { store.put_step("run", &r).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("put_step");
        }
    }
    let cpu = cpu_seconds() - started;
    drop(store);
    remove(path);
    cpu * 1e6 / STEPS as f64
}

/// The same rows through rusqlite alone, on one thread.
fn raw_sqlite(path: &Path) -> f64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE steps (run_key INTEGER, step TEXT, tier TEXT, input_hash TEXT, model TEXT, \
         input_tokens INTEGER, output_tokens INTEGER, cost_usd REAL, attempts INTEGER, duration_ms INTEGER, \
         simulated INTEGER, output TEXT, PRIMARY KEY (run_key, step)) WITHOUT ROWID",
    )
    .unwrap();
    let records: Vec<StepRecord> = (0..STEPS).map(record).collect();
    let started = cpu_seconds();
    for r in &records {
        conn.prepare_cached("BEGIN IMMEDIATE").unwrap().execute([]).unwrap();
        conn.prepare_cached("INSERT INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")
            .unwrap()
            .execute(rusqlite::params![
                1,
                r.step.as_str(),
                r.tier.as_str(),
                r.input_hash.to_string(),
                &*r.reply.outcome.model,
                r.reply.outcome.usage.input_tokens as i64,
                r.reply.outcome.usage.output_tokens as i64,
                r.reply.outcome.cost_usd,
                r.reply.outcome.attempts,
                r.reply.outcome.duration_ms as i64,
                r.reply.simulated,
                &*r.reply.text
            ])
            .unwrap();
        conn.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
    }
    let cpu = cpu_seconds() - started;
    drop(conn);
    remove(path);
    cpu * 1e6 / STEPS as f64
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// User + system CPU of the whole process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

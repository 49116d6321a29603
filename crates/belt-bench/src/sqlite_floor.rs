//! Workload S: SQLite's own cost of the rows that A writes on the SQLite store, without belt.
//!
//! A run of A on a fresh SQLite store writes its steps, its event batches, its run, its
//! definition and its result. S reads those rows back from the database belt wrote. It then
//! writes them again into a fresh database of the same schema, with rusqlite alone:
//! - one prepared single-row INSERT per table;
//! - the rows in belt's order (each step's event batches beside it);
//! - transactions of `STEPS_PER_COMMIT` step records, what belt's group commit usually holds
//!   in this case (10,002 step records in 426, 442 and 846 transactions in three runs,
//!   counted with a counter in the writer on a scratch build);
//! - the same `synchronous = NORMAL` and WAL.
//!
//! Only that second write is measured. Its CPU per call is the floor under A's durable
//! cost: what SQLite and the kernel spend on these bytes in these transactions, however
//! little the code around them did. A on SQLite less A in memory, less S, is what belt
//! itself adds to make a step durable (encoding the rows, the writer's hand-offs, the
//! result's JSON).

use std::path::Path;
use std::sync::Arc;

use belt_llm::SimulatedProvider;
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use crate::{Args, FanOut, cpu_seconds, drive, median, remove_db, round};

/// Step records per transaction (see the module docs).
const STEPS_PER_COMMIT: usize = 24;

/// The tables a run writes, in the order it first writes to them.
const TABLES: [&str; 5] = ["runs", "run_definitions", "steps", "events", "run_results"];

/// One table's rows, as read back.
struct Rows {
    table: &'static str,
    columns: usize,
    rows: Vec<Vec<Value>>,
}

pub(crate) async fn run(args: &Args) -> String {
    let n = args.n;
    let dir = std::env::temp_dir();
    let written = dir.join(format!("belt-bench-s-{}-belt.db", std::process::id()));
    write_with_belt(args, &written).await;
    let rows = read_back(&written);
    remove_db(&written);
    let steps = rows.iter().find(|r| r.table == "steps").map_or(0, |r| r.rows.len());
    let events = rows.iter().find(|r| r.table == "events").map_or(0, |r| r.rows.len());
    let repeat = args.repeat.unwrap_or(5).max(1);
    let mut cpus = Vec::new();
    let mut commits = 0;
    for k in 0..repeat {
        let again = dir.join(format!("belt-bench-s-{}-{k}.db", std::process::id()));
        // The schema, made by belt's own migrations; not measured.
        drop(belt_store::SqliteStore::open(&again).await.expect("create the floor's database"));
        let conn = Connection::open(&again).expect("open the floor's database");
        conn.pragma_update(None, "synchronous", "NORMAL").expect("synchronous = NORMAL");
        let before = cpu_seconds();
        commits = write_again(&conn, &rows);
        cpus.push(cpu_seconds() - before);
        drop(conn);
        remove_db(&again);
    }
    let calls = n as u64 + 2;
    serde_json::json!({
        "workload": "S",
        "store": "sqlite",
        "n": n,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "calls": calls,
        "repeat": repeat,
        "step_rows": steps,
        "event_rows": events,
        "commits": commits,
        "cpu_us_per_call": round(median(&mut cpus) * 1e6 / calls as f64, 2),
    })
    .to_string()
}

/// A run of A on a fresh SQLite store at `path`, as `--workload A --store sqlite` runs it.
async fn write_with_belt(args: &Args, path: &Path) {
    let n = args.n;
    let store = belt_store::SqliteStore::open(path).await.expect("open the bench's SQLite store");
    let provider = Arc::new(SimulatedProvider::new(crate::bench_sim(args)));
    let options = crate::bench_options(args, provider).with_store(Arc::new(store));
    let fan_out = FanOut { n, chain: false, model: "simulated/bench".into(), tools: None };
    drive(fan_out, crate::bench_task(), options).await;
}

/// Every row of the run's tables, in each table's key order.
fn read_back(path: &Path) -> Vec<Rows> {
    let conn = Connection::open(path).expect("open the database belt wrote");
    TABLES
        .iter()
        .map(|&table| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).expect("read a table back");
            let columns = stmt.column_count();
            let rows = stmt
                .query_map([], |r| (0..columns).map(|i| r.get::<_, Value>(i)).collect())
                .expect("query a table")
                .collect::<Result<Vec<Vec<Value>>, _>>()
                .expect("read a row");
            Rows { table, columns, rows }
        })
        .collect()
}

/// The rows written again, in transactions of [`STEPS_PER_COMMIT`] step records with the
/// event batches spread among them. Returns the number of transactions.
fn write_again(conn: &Connection, tables: &[Rows]) -> usize {
    // Every statement prepared once, before the first row, as belt's writer does.
    let prepare = |sql: &str| conn.prepare(sql).expect("prepare a statement");
    let mut inserts: Vec<_> = tables
        .iter()
        .map(|t| prepare(&format!("INSERT INTO {} VALUES ({})", t.table, vec!["?"; t.columns].join(", "))))
        .collect();
    let (mut begin, mut commit) = (prepare("BEGIN IMMEDIATE"), prepare("COMMIT"));
    let index = |name: &str| tables.iter().position(|t| t.table == name).expect("a table read back");
    let (steps, events) = (index("steps"), index("events"));
    let mut put = |t: usize, row: usize| {
        inserts[t].execute(params_from_iter(tables[t].rows[row].iter())).expect("insert a row");
    };
    let mut commits = 0;
    let mut transaction = |rows: &mut dyn FnMut()| {
        begin.execute([]).expect("begin");
        rows();
        commit.execute([]).expect("commit");
        commits += 1;
    };
    let (n_steps, n_events) = (tables[steps].rows.len(), tables[events].rows.len());
    transaction(&mut || {
        for t in [index("runs"), index("run_definitions")] {
            (0..tables[t].rows.len()).for_each(|r| put(t, r));
        }
    });
    // Event batch j goes with step row j × steps / events: belt records them beside the steps.
    let mut next_event = 0;
    let mut first = 0;
    while first < n_steps {
        let end = (first + STEPS_PER_COMMIT).min(n_steps);
        transaction(&mut || {
            for i in first..end {
                put(steps, i);
                while next_event < n_events && next_event * n_steps <= i * n_events {
                    put(events, next_event);
                    next_event += 1;
                }
            }
        });
        first = end;
    }
    transaction(&mut || {
        (next_event..n_events).for_each(|r| put(events, r));
        let t = index("run_results");
        (0..tables[t].rows.len()).for_each(|r| put(t, r));
    });
    commits
}

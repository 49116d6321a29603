//! The scale-out case: runs queued in PostgreSQL and driven by 1, 2 and 4 `belt worker`
//! processes; and how long a killed worker's runs take to move on.
//!
//! ```text
//! belt-bench --scale-out postgres://belt@127.0.0.1:PORT/belt [--belt target/release/belt]
//! ```
//!
//! Every trial gets a fresh database (created from the given URL's server and dropped
//! after), the runs are queued with `belt run --detach` before any worker starts, and the
//! clock runs from the workers' start to the last run's completion, read from the store.
//! Prints one JSON line per trial.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belt_core::RunStatus;
use belt_core::store::RunStore;
use sqlx::Connection;

/// What the scale-out case runs: `runs` cascades of `agents` workers at `latency_ms`, each
/// worker driving `max_runs` at once.
pub struct Shape {
    pub runs: usize,
    pub agents: usize,
    pub latency_ms: u64,
    pub max_runs: usize,
}

/// Run the throughput trials (1, 2, 4 workers) and the kill trial; one JSON line each.
pub async fn scale_out(base_url: &str, belt: &Path, shape: &Shape) {
    for workers in [1, 2, 4] {
        let db = Fresh::create(base_url, &format!("tp{workers}")).await;
        let line = throughput(&db.url, belt, shape, workers).await;
        println!("{line}");
        db.drop_it().await;
    }
    let db = Fresh::create(base_url, "kill").await;
    println!("{}", kill_recovery(&db.url, belt, shape).await);
    db.drop_it().await;
}

/// A database of its own for one trial.
struct Fresh {
    admin: String,
    name: String,
    url: String,
}

impl Fresh {
    async fn create(base_url: &str, what: &str) -> Fresh {
        let name = format!("belt_bench_{}_{what}", std::process::id());
        let mut c = sqlx::PgConnection::connect(base_url).await.expect("connect to the bench's PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut c)
            .await
            .ok();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .expect("create the trial's database");
        let (head, _) = base_url.rsplit_once('/').expect("a URL naming a database");
        Fresh { admin: base_url.to_string(), url: format!("{head}/{name}"), name }
    }

    async fn drop_it(self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.ok();
        }
    }
}

/// `belt ARGS` on `store`, its home in a temporary directory.
fn belt_cmd(belt: &Path, store: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(belt);
    cmd.arg("--store").arg(store).args(args).env("BELT_HOME", std::env::temp_dir().join("belt-bench-home"));
    cmd.env_remove("BELT_MODEL").stdin(Stdio::null());
    cmd
}

/// Queue the trial's runs; their ids.
fn submit(belt: &Path, store: &str, shape: &Shape) -> Vec<String> {
    (0..shape.runs)
        .map(|i| {
            let out = belt_cmd(
                belt,
                store,
                &[
                    "run",
                    &format!("Scale-out run {i}"),
                    "--agents",
                    &shape.agents.to_string(),
                    "--sim-latency-ms",
                    &shape.latency_ms.to_string(),
                    "--seed",
                    &i.to_string(),
                    "--detach",
                    "--quiet",
                ],
            )
            .output()
            .expect("run belt run --detach");
            assert!(out.status.success(), "belt run --detach: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect()
}

fn start_workers(belt: &Path, store: &str, n: usize, max_runs: usize) -> Vec<Child> {
    (0..n)
        .map(|w| {
            belt_cmd(
                belt,
                store,
                &["worker", "--quiet", "--max-runs", &max_runs.to_string(), "--name", &format!("w{w}")],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start belt worker")
        })
        .collect()
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
}

async fn open(url: &str) -> Arc<dyn RunStore> {
    let spec: belt_store::StoreSpec = url.parse().expect("a store URL");
    belt_store::open(&spec).await.expect("open the trial's store")
}

/// Runs per minute with `workers` processes.
async fn throughput(url: &str, belt: &Path, shape: &Shape, workers: usize) -> String {
    let ids = submit(belt, url, shape);
    let store = open(url).await;
    let started = Instant::now();
    let children = start_workers(belt, url, workers, shape.max_runs);
    loop {
        let listed = store.list_runs(shape.runs + 10).await.expect("list the runs");
        let done = listed.iter().filter(|r| r.status == RunStatus::Completed).count();
        if done >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    stop(children);
    serde_json::json!({
        "case": "scale_out",
        "workers": workers,
        "runs": shape.runs,
        "agents": shape.agents,
        "latency_ms": shape.latency_ms,
        "max_runs": shape.max_runs,
        "wall_s": crate::round(wall, 2),
        "runs_per_min": crate::round(shape.runs as f64 / wall * 60.0, 1),
    })
    .to_string()
}

/// Seconds from `kill -9` of a worker to the last of its runs being driven by another.
async fn kill_recovery(url: &str, belt: &Path, shape: &Shape) -> String {
    let slow =
        Shape { runs: 2 * shape.max_runs, agents: shape.agents, latency_ms: 1000, max_runs: shape.max_runs };
    let ids = submit(belt, url, &slow);
    let store = open(url).await;
    let mut victim = start_workers(belt, url, 1, slow.max_runs).remove(0);
    // The victim takes its runs first; then the survivor starts, with room for them all.
    let victims = loop {
        let listed = store.list_runs(100).await.expect("list the runs");
        let held: Vec<String> =
            listed.iter().filter(|r| r.owner.is_some()).map(|r| r.run_id.clone()).collect();
        if held.len() >= slow.max_runs {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let survivor = start_workers(belt, url, 1, 2 * slow.max_runs);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owners = |listed: &[belt_core::store::RunSummary], id: &str| {
        listed.iter().find(|r| r.run_id == id).and_then(|r| r.owner.clone())
    };
    let before = store.list_runs(100).await.expect("list the runs");
    let victim_owner: Vec<(String, Option<String>)> =
        victims.iter().map(|id| (id.clone(), owners(&before, id))).collect();
    let _ = victim.kill();
    let _ = victim.wait();
    let killed = Instant::now();
    loop {
        let listed = store.list_runs(100).await.expect("list the runs");
        let moved = victim_owner.iter().all(|(id, old)| {
            let r = listed.iter().find(|r| &r.run_id == id);
            r.is_some_and(|r| r.status == RunStatus::Completed || (r.owner.is_some() && r.owner != *old))
        });
        if moved {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "the killed worker's runs did not move on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved_s = killed.elapsed().as_secs_f64();
    stop(survivor);
    drop(ids);
    serde_json::json!({
        "case": "scale_out_kill",
        "runs_moved": victims.len(),
        "seconds_to_move_on": crate::round(moved_s, 2),
        "lease_ttl_s": belt_core::store::LEASE_TTL.as_secs_f64(),
    })
    .to_string()
}

/// `target/release/belt` beside this binary, unless given.
pub fn default_belt() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name("belt")
}

//! `belt-bench`: measures the engine's own cost on the simulated provider.
//!
//! ```text
//! belt-bench --workload A --n 10000 --latency-ms 50 --concurrency 64
//! belt-bench --suite            # every standard case, one process each
//! ```
//!
//! Workloads:
//! - **A**, fan-out: one decomposition call, N workers, one synthesis call.
//!   Ideal wall time (the critical path) = (⌈N/C⌉ + 2)·L.
//! - **B**, the cascade as `belt run` runs it (workers, synthesizer levels, executive),
//!   from a given plan of N subtasks so that the simulated decomposer does not have to
//!   write a JSON plan of 100,000 items. Ideal = (⌈N/C⌉ + Σ⌈level/C⌉ + executive)·L.
//! - **C**, a sequential chain: one decomposition call, K steps each depending on the
//!   previous one, one synthesis call. Ideal = (K + 2)·L.
//! - **P**, the provider alone: A's calls (its decomposition, N workers', its synthesis)
//!   made straight on the simulated provider, C at a time, from the same plan and with the
//!   requests A builds, and no engine. A's figures less P's are what the engine adds over
//!   calling the provider yourself: the simulated provider's own work (hashing the request,
//!   writing its reply) and a waiting call's own state are in A's figures, as a real
//!   provider's client is, but they are not the engine's.
//! - **Q**, B's requests straight on the simulated provider: recorded from a run of B,
//!   then sent again without the engine, C at a time (see `replay.rs`). B's
//!   `cpu_us_per_call` less Q's is what the engine and its cascade spend per call.
//! - **S**, SQLite's own floor under A on the SQLite store: the rows a run of A wrote,
//!   written again into a fresh database with rusqlite alone (see `sqlite_floor.rs`).
//! - **T**, A's shape where each worker makes one tool call through the engine
//!   (`Ctx::tool`: the tool policy's timeout, events, the record) instead of an LLM call;
//!   the tool answers at once. Its `cpu_us_per_call` beside A's is what a tool call costs
//!   the engine next to a model call.
//! - **H**, **R**, **Y**, **Z**: A through the OpenAI adapter over HTTP/1.1, and its
//!   transport floors without belt (bare reqwest; hyper-util's pool; hyper's connections
//!   directly): see `http.rs`.
//!
//! Every call asks for at most 16 output tokens, so the figures measure the engine (limits,
//! budget bookkeeping, events, recording, scheduling), not text generation.
//!
//! Each case prints one JSON line: `workload`, `n`, `latency_ms`, `concurrency`, `calls`,
//! `wall_s`, `ideal_s`, `overhead_us_per_call` = (wall − ideal)/calls,
//! `cpu_us_per_call` (user + system CPU of the whole process during the run, divided by
//! calls), `peak_rss_mib` (the process's high-water mark), and two memory figures:
//! - `kib_per_inflight_branch`: RSS growth since the run started, read at the moment the
//!   number of provider calls in flight first reaches its maximum, divided by that number —
//!   what a waiting branch costs (its futures, its started event, the plan entry);
//! - `kib_per_step_retained`: RSS growth over the whole run divided by the calls — what a
//!   finished step keeps (its record, its output, its events in the in-memory store).
//!
//! With `--store memory` (the default), `store_held_mib`, `store_held_steps` and
//! `store_held_events` say what the in-memory store keeps after the run
//! (`MemoryStore::held`). With `--store sqlite`, `store_open_cpu_ms` is the CPU of opening the fresh database
//! (creating it, running the migrations): once per process, so outside `cpu_us_per_call`.
//!
//! To see the first figure cleanly, use a concurrency of N and a latency long enough for
//! all N calls to start before the first one ends (the suite uses N = 10,000 at 1 s).

mod http;
mod replay;
mod scale;
mod sqlite_floor;

use std::process::Command;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use belt_core::llm::CallInfo;
use belt_core::patterns::cascade::tier_levels;
use belt_core::{
    AgentOutput, Cascade, Ctx, LlmRequest, Orchestrator, Outcome, Plan, RunOptions, RunStatus, StepError,
    StepId, StepSpec, Subtask, Synthesis, Task, Tier,
};
use belt_llm::{Providers, SimConfig, SimulatedProvider};
use clap::Parser;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Parser)]
#[command(name = "belt-bench", about = "Benchmarks of belt's engine on the simulated provider")]
struct Args {
    /// A (fan-out), B (cascade), C (sequential chain), F (A's shape on bare sleeps: the
    /// floor set by the timer, without belt), P (A's calls straight on the simulated
    /// provider, without belt), Q (B's requests straight on the simulated provider), S (the rows A writes on SQLite, written again with rusqlite
    /// alone: SQLite's floor), H (A through the OpenAI adapter against a
    /// local fake server), R (H's calls as bare reqwest POSTs: the transport's floor), Y
    /// (R's calls on hyper-util's pool, without reqwest), Z (R's calls on hyper's HTTP/1
    /// connections directly: the floor under Y), or T (A's shape with a tool call per worker).
    #[arg(long, default_value = "A")]
    workload: String,
    /// Workers for A and B (and for P, Q and S, the floors under them).
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Steps of the chain for C.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// Simulated latency of every call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Repetitions (median of wall and CPU); default 5 for short cases, else 1.
    #[arg(long)]
    repeat: Option<usize>,
    /// Sleep on tokio's timer instead of the simulated provider's precise one.
    #[arg(long)]
    tokio_timer: bool,
    /// Where runs are recorded: memory, sqlite (a fresh database file in the temp dir), or a
    /// postgres://… URL.
    #[arg(long, default_value = "memory")]
    store: String,
    /// Run the standard suite, each case in a fresh process (so peak RSS is per case).
    #[arg(long)]
    suite: bool,
    /// The scale-out case on the PostgreSQL server of this URL (see `scale.rs`).
    #[arg(long, value_name = "POSTGRES_URL")]
    scale_out: Option<String>,
    /// The `belt` binary the scale-out case starts [default: beside belt-bench]
    #[arg(long)]
    belt: Option<std::path::PathBuf>,
    /// Runs of the scale-out case.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Runs each worker of the scale-out case drives at once.
    #[arg(long, default_value_t = 8)]
    max_runs: usize,
    /// Export every run as OpenTelemetry spans to this OTLP/HTTP collector (belt-otel, as
    /// `belt run --otlp-endpoint`): the CPU per call with export on, next to off (each
    /// repetition runs without export, then with it, in this process:
    /// `cpu_us_per_call_export_off`, `export_cost_us_per_call`). Give a collector in
    /// another process, so that its CPU is not counted here.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// Run the case on tokio's current-thread runtime instead of the multi-thread one (one
    /// worker per core): what cross-thread wake-ups cost, next to the default.
    #[arg(long)]
    current_thread: bool,
    /// Workload H's options (`--url`, `--model`, `--no-stream`): see `http.rs`.
    #[command(flatten)]
    http: http::HttpArgs,
}

/// `--otlp`: where the runs' spans go.
static OTLP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--otlp`: the next run's exporter, started before its measurement begins (`case`) and
/// taken by `drive`. Starting one builds an HTTP client with its TLS setup: once per process
/// in `belt run` and `belt serve`, not per call, so it is reported on its own
/// (`otlp_start_cpu_ms`), as opening the SQLite store is.
static EXPORTER: std::sync::Mutex<Option<belt_otel::Exporter>> = std::sync::Mutex::new(None);

/// The allocator: jemalloc rather than the C library's. A run allocates and frees many
/// small values from every worker thread; with glibc's malloc that was about a quarter of
/// the engine's CPU per call (BENCHMARKS.md, "The allocator"). A library user picks their
/// own allocator; this is the binary's choice.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args = Args::parse();
    if args.http.serve_fake {
        http::serve_fake(&args.http);
        return;
    }
    if let Some(url) = &args.otlp {
        let _ = OTLP.set(url.clone());
    }
    if args.suite {
        suite();
        return;
    }
    let mut builder = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().expect("tokio runtime");
    if let Some(url) = &args.scale_out {
        let belt = args.belt.clone().unwrap_or_else(scale::default_belt);
        let shape = scale::Shape {
            runs: args.runs,
            agents: args.n.min(1000),
            latency_ms: args.latency_ms,
            max_runs: args.max_runs,
        };
        runtime.block_on(scale::scale_out(url, &belt, &shape));
        return;
    }
    let line = if args.workload.eq_ignore_ascii_case("S") {
        runtime.block_on(sqlite_floor::run(&args))
    } else if args.workload.eq_ignore_ascii_case("Q") {
        runtime.block_on(replay::run(&args))
    } else {
        runtime.block_on(case(&args))
    };
    println!("{line}");
}

/// The standard cases recorded in BENCHMARKS.md.
fn suite() {
    let exe = std::env::current_exe().expect("own path");
    let mut cases: Vec<Vec<String>> = Vec::new();
    let mut add = |w: &str, n: usize, l: u64, c: usize| {
        let count = if w == "C" { "--k" } else { "--n" };
        cases.push(
            [
                "--workload".to_string(),
                w.to_string(),
                count.to_string(),
                n.to_string(),
                "--latency-ms".into(),
                l.to_string(),
                "--concurrency".into(),
                c.to_string(),
            ]
            .to_vec(),
        );
    };
    for n in [10, 100, 1_000, 10_000, 100_000] {
        add("A", n, 0, 64);
    }
    for n in [10, 1_000, 10_000, 100_000] {
        add("B", n, 0, 64);
    }
    add("C", 1_000, 0, 64);
    add("T", 10_000, 0, 64);
    add("A", 10_000, 50, 64);
    add("B", 10_000, 50, 64);
    add("C", 100, 50, 64);
    // Every branch in flight at once, for the memory per branch.
    add("A", 10_000, 1_000, 10_000);
    add("F", 10_000, 50, 64);
    add("P", 10_000, 0, 64);
    add("P", 10_000, 1_000, 10_000);
    // Real HTTP: the OpenAI adapter against a local fake server.
    add("H", 1_000, 0, 64);
    add("H", 10_000, 0, 64);
    // The SQLite store against the in-memory one (the same cases above).
    for w in ["A", "B"] {
        cases.push(sqlite_case(w, "--n", 10_000));
    }
    cases.push(sqlite_case("C", "--k", 10_000));
    // B's requests straight on the provider (see `replay.rs`).
    cases.push(["--workload", "Q", "--n", "10000", "--concurrency", "64"].map(String::from).to_vec());
    // SQLite's own cost of A's rows, without belt (see `sqlite_floor.rs`).
    cases.push(["--workload", "S", "--n", "10000", "--concurrency", "64"].map(String::from).to_vec());
    let mut lines = Vec::new();
    for c in cases {
        let out = Command::new(&exe).args(&c).output().expect("run a case");
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        lines.extend(stdout.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()));
        if !out.status.success() {
            eprintln!("case {c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    for check in checks(&lines) {
        println!("{check}");
    }
}

/// The performance targets (issue 20), each a line beside the suite's figure for it, so a
/// regression shows in the suite's own output: `{"check": …, "figure": …, "target": …,
/// "met": …}` (`figure` null when its case did not run).
fn checks(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let find = |w: &str, n: u64, l: u64, c: u64, store: &str| {
        lines.iter().find(|v| {
            v["workload"] == w
                && v["n"] == n
                && v["latency_ms"] == l
                && v["concurrency"] == c
                && v["store"] == store
        })
    };
    let figure = |w, n, l, c, store, key: &str| find(w, n, l, c, store).and_then(|v| v[key].as_f64());
    let less = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    let sqlite_over_memory = |w| {
        less(
            figure(w, 10_000, 0, 64, "sqlite", "cpu_us_per_call"),
            figure(w, 10_000, 0, 64, "memory", "cpu_us_per_call"),
        )
    };
    let targets = [
        (
            "engine CPU µs per call, A, N = 10,000",
            figure("A", 10_000, 0, 64, "memory", "cpu_us_per_call"),
            2.0,
        ),
        (
            "engine CPU µs per call, A less the provider alone (P), N = 10,000",
            less(
                figure("A", 10_000, 0, 64, "memory", "cpu_us_per_call"),
                figure("P", 10_000, 0, 64, "memory", "cpu_us_per_call"),
            ),
            2.0,
        ),
        (
            "engine CPU µs per call, B, N = 10,000",
            figure("B", 10_000, 0, 64, "memory", "cpu_us_per_call"),
            3.0,
        ),
        (
            "engine CPU µs per call, B less its requests straight on the provider (Q), N = 10,000",
            less(
                figure("B", 10_000, 0, 64, "memory", "cpu_us_per_call"),
                figure("Q", 10_000, 0, 64, "memory", "cpu_us_per_call"),
            ),
            3.0,
        ),
        (
            "KiB per in-flight branch, 10,000 in flight",
            figure("A", 10_000, 1_000, 10_000, "memory", "kib_per_inflight_branch"),
            1.5,
        ),
        (
            "KiB per in-flight branch, A less the provider alone (P), 10,000 in flight",
            less(
                figure("A", 10_000, 1_000, 10_000, "memory", "kib_per_inflight_branch"),
                figure("P", 10_000, 1_000, 10_000, "memory", "kib_per_inflight_branch"),
            ),
            1.5,
        ),
        (
            "client CPU µs per call over HTTP, H, N = 10,000",
            figure("H", 10_000, 0, 64, "memory", "cpu_us_per_call"),
            20.0,
        ),
        ("durable fan-out µs per call over memory, A on SQLite", sqlite_over_memory("A"), 4.0),
    ];
    // Not a target: the floor under the last one, SQLite's own work on the same rows.
    let s = lines.iter().find(|v| v["workload"] == "S").and_then(|v| v["cpu_us_per_call"].as_f64());
    let floor = serde_json::json!({
        "check": "SQLite's own µs per call for A's rows, without belt (S): the floor under the last line",
        "figure": s,
        "target": null,
        "met": null,
    });
    targets
        .into_iter()
        .map(|(check, figure, target)| {
            serde_json::json!({
                "check": check,
                "figure": figure.map(|f| round(f, 2)),
                "target": target,
                "met": figure.map(|f| f <= target),
            })
        })
        .chain([floor])
        .collect()
}

fn sqlite_case(workload: &str, count: &str, n: usize) -> Vec<String> {
    [
        "--workload",
        workload,
        count,
        &n.to_string(),
        "--latency-ms",
        "0",
        "--concurrency",
        "64",
        "--store",
        "sqlite",
    ]
    .map(String::from)
    .to_vec()
}

async fn case(args: &Args) -> String {
    let l = Duration::from_millis(args.latency_ms);
    let c = args.concurrency;
    let sim = bench_sim(args);
    let task = bench_task();
    let waves = |n: usize| n.div_ceil(c) as f64;
    let (n, ideal, _) = match args.workload.as_str() {
        "A" | "a" | "H" | "h" | "R" | "r" | "Y" | "y" | "Z" | "z" | "T" | "t" => {
            (args.n, (waves(args.n) + 2.0) * l.as_secs_f64(), args.n.min(c))
        }
        "B" | "b" => {
            let levels = tier_levels(args.n, 5);
            let exec = usize::from(levels.last().is_some_and(|&t| t >= 2));
            let steps = waves(args.n) + levels.iter().map(|&k| waves(k)).sum::<f64>() + exec as f64;
            (args.n, steps * l.as_secs_f64(), args.n.min(c))
        }
        "C" | "c" => (args.k, (args.k as f64 + 2.0) * l.as_secs_f64(), 1),
        "F" | "f" | "P" | "p" => (args.n, (waves(args.n) + 2.0) * l.as_secs_f64(), args.n.min(c)),
        other => {
            eprintln!("unknown workload `{other}`; use A, B, C, F, H, P, Q, R, S, T, Y or Z");
            std::process::exit(2);
        }
    };
    let provider = Arc::new(SimulatedProvider::new(sim.clone()));
    let options = bench_options(args, provider.clone());
    // Memory is read on the first repetition (a fresh process); time and CPU are the
    // medians over all repetitions, which steadies short cases on a shared machine.
    let repeat = args.repeat.unwrap_or(if n <= 10_000 && args.latency_ms == 0 { 5 } else { 1 }).max(1);
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut opens = Vec::new();
    let mut otlp_starts = Vec::new();
    // `--otlp`: each repetition is a pair, the run without export then with it, in the same
    // process (this machine's figures swing more between processes than export costs).
    let mut cpus_off = Vec::new();
    let exports: &[bool] = if OTLP.get().is_some() { &[false, true] } else { &[false] };
    let mut first = None;
    // H's server (or `--url`), started outside the measurement.
    let target = matches!(args.workload.to_ascii_uppercase().as_str(), "H" | "R" | "Y" | "Z")
        .then(|| http::Target::start(&args.http));
    let mut server_counts = None;
    let mut held = None;
    for (_, export) in (0..repeat).flat_map(|r| exports.iter().map(move |e| (r, *e))) {
        let before_rss = rss_kib();
        // The sampler is a thread of its own: start it only where its figure is reported.
        let sampler =
            (c >= 1000 && args.latency_ms > 0).then(|| InFlightSampler::start(provider.clone(), before_rss));
        let mut options = options.clone();
        let db = std::env::temp_dir().join(format!("belt-bench-{}-{}.db", std::process::id(), walls.len()));
        // The in-memory store is made here (rather than by the engine) to ask it what it keeps.
        let memory = (args.store == "memory").then(|| Arc::new(belt_core::MemoryStore::new()));
        if let Some(m) = &memory {
            options = options.with_store(m.clone());
        }
        if args.store == "sqlite" {
            // Opening the store (creating the file, running its migrations) is once per
            // process, not per step: measured on its own.
            let before_open = cpu_seconds();
            let store = belt_store::SqliteStore::open(&db).await.expect("open the bench's SQLite store");
            opens.push(cpu_seconds() - before_open);
            options = options.with_store(Arc::new(store));
        } else if args.store.starts_with("postgres") {
            // A database of the caller's (its runs accumulate; each has its own id).
            let before_open = cpu_seconds();
            let store =
                belt_store::PgStore::open(&args.store).await.expect("open the bench's PostgreSQL store");
            opens.push(cpu_seconds() - before_open);
            options = options.with_store(Arc::new(store));
        }
        if let Some(target) = &target {
            // A new provider, so a new pool, each repetition (as each `belt run` has).
            options.providers = target.providers(sim.clone());
        }
        if let Some(url) = OTLP.get().filter(|_| export) {
            let before_start = cpu_seconds();
            let config = belt_otel::OtelConfig::new(url).expect("a valid --otlp URL");
            let exporter = belt_otel::Exporter::start(config).expect("start the exporter");
            otlp_starts.push(cpu_seconds() - before_start);
            *EXPORTER.lock().expect("the exporter slot") = Some(exporter);
        }
        let counts_before = target.as_ref().and_then(http::Target::counts);
        let before_cpu = cpu_seconds();
        let started = Instant::now();
        let (calls, status, end_rss) = once(args, n, c, l, &task, options, target.as_ref()).await;
        if OTLP.get().is_some() && !export {
            cpus_off.push(cpu_seconds() - before_cpu);
        } else {
            walls.push(started.elapsed().as_secs_f64());
            cpus.push(cpu_seconds() - before_cpu);
        }
        if let (Some(before), Some(after)) = (counts_before, target.as_ref().and_then(http::Target::counts)) {
            server_counts.get_or_insert((after.accepted - before.accepted, after.requests - before.requests));
        }
        // After the measurement: the database files are not kept (10,000 steps are ~10 MB).
        if args.store == "sqlite" {
            remove_db(&db);
        }
        let (max_inflight, inflight_kib) =
            sampler.map_or((provider.max_in_flight(), 0), InFlightSampler::stop);
        let retained = end_rss.saturating_sub(before_rss);
        if held.is_none() {
            held = memory.map(|m| m.held());
        }
        first.get_or_insert((calls, status, peak_rss_kib(), max_inflight, inflight_kib, retained));
    }
    let (calls, status, peak, max_inflight, inflight_kib, retained) = first.expect("at least one repetition");
    let (wall, cpu) = (median(&mut walls), median(&mut cpus));
    let calls_f = calls.max(1) as f64;
    let mut line = serde_json::json!({
        "workload": args.workload.to_ascii_uppercase(),
        "store": if args.store.starts_with("postgres") { "postgres" } else { args.store.as_str() },
        "calls_per_s": round(calls_f / wall.max(1e-9), 0),
        "n": n,
        "latency_ms": args.latency_ms,
        "concurrency": c,
        "calls": calls,
        "status": status,
        "repeat": repeat,
        "wall_s": round(wall, 4),
        "ideal_s": round(ideal, 4),
        "wall_over_ideal": if ideal > 0.0 { serde_json::json!(round(wall / ideal, 4)) } else { serde_json::Value::Null },
        "overhead_us_per_call": round((wall - ideal) / calls_f * 1e6, 2),
        "cpu_us_per_call": round(cpu / calls_f * 1e6, 2),
        "peak_rss_mib": round(peak as f64 / 1024.0, 1),
        "max_inflight": max_inflight,
        // Below 1,000 branches in flight, page-granular RSS readings say nothing per branch.
        "kib_per_inflight_branch": if max_inflight >= 1000 {
            serde_json::json!(round(inflight_kib as f64 / max_inflight as f64, 2))
        } else {
            serde_json::Value::Null
        },
        "kib_per_step_retained": round(retained as f64 / calls_f, 2),
        // What the in-memory store keeps after the run (MemoryStore::held).
        "store_held_mib": held.map(|h| round(h.bytes as f64 / 1048576.0, 1)),
        "store_held_steps": held.map(|h| h.steps),
        "store_held_events": held.map(|h| h.events),
        "store_open_cpu_ms": if opens.is_empty() { serde_json::Value::Null } else { serde_json::json!(round(median(&mut opens) * 1e3, 2)) },
        // `--otlp`: the same runs without export, paired in this process, and the difference.
        "cpu_us_per_call_export_off": (!cpus_off.is_empty()).then(|| round(median(&mut cpus_off) / calls_f * 1e6, 2)),
        "export_cost_us_per_call": (!cpus_off.is_empty()).then(|| round((cpu - median(&mut cpus_off)) / calls_f * 1e6, 2)),
        "runtime": if args.current_thread { "current_thread" } else { "multi_thread" },
        "otlp_start_cpu_ms": if otlp_starts.is_empty() { serde_json::Value::Null } else { serde_json::json!(round(median(&mut otlp_starts) * 1e3, 2)) },
    });
    if let Some(target) = &target {
        // H: the client's CPU only (the fake server runs in another process); the server's
        // TCP connections accepted and requests answered in the first repetition.
        line["stream"] = target.stream().into();
        line["server_accepted_connections"] = server_counts.map(|c| c.0).into();
        line["server_requests"] = server_counts.map(|c| c.1).into();
    }
    line.to_string()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One run of the case; returns its calls, status and the RSS while its result is held.
async fn once(
    args: &Args,
    n: usize,
    c: usize,
    l: Duration,
    task: &Task,
    mut options: RunOptions,
    target: Option<&http::Target>,
) -> (u64, RunStatus, u64) {
    let task = task.clone();
    match args.workload.to_ascii_uppercase().as_str() {
        "A" => {
            drive(FanOut { n, chain: false, model: "simulated/bench".into(), tools: None }, task, options)
                .await
        }
        "T" => {
            // A tool that answers at once: what remains is the engine's cost of a tool call.
            let echo =
                belt_core::Tool::dynamic("echo", "Echo.", serde_json::json!({"type": "object"}), |v| {
                    std::future::ready(Ok(belt_core::ToolOutput::new(v.to_string())))
                });
            let tools = Some(belt_core::Tools::new().with(echo));
            let (_, status, rss) =
                drive(FanOut { n, chain: false, model: "simulated/bench".into(), tools }, task, options)
                    .await;
            // The decomposition and synthesis calls, and one tool call per worker.
            (n as u64 + 2, status, rss)
        }
        "H" => {
            // The fan-out through the real OpenAI adapter (HTTP/1.1) against the target
            // whose provider `case` put in `options` (see `http.rs`).
            let model = http::model(&args.http);
            drive(FanOut { n, chain: false, model: model.into(), tools: None }, task, options).await
        }
        "R" => {
            let (calls, status) = http::raw_floor(target.expect("R's target"), n, c).await;
            (calls, status, rss_kib())
        }
        "Y" => {
            let (calls, status) = http::hyper_pool_floor(target.expect("Y's target"), n, c).await;
            (calls, status, rss_kib())
        }
        "Z" => {
            let (calls, status) = http::hyper_conn_floor(target.expect("Z's target"), n, c).await;
            (calls, status, rss_kib())
        }
        "B" => {
            options.plan = Some(cascade_plan(n));
            drive(bench_cascade(n), task, options).await
        }
        "C" => {
            drive(FanOut { n, chain: true, model: "simulated/bench".into(), tools: None }, task, options)
                .await
        }
        "P" => {
            let (calls, status) = provider_alone(&options, &task, n, c).await;
            (calls, status, rss_kib())
        }
        _ => {
            let (calls, status) = timer_floor(n, c, l).await;
            (calls, status, rss_kib())
        }
    }
}

/// Run to the end with a consumer draining the events, as every real caller has. Returns
/// the calls, the status and the RSS while the result is still held.
async fn drive(orch: impl Orchestrator, task: Task, options: RunOptions) -> (u64, RunStatus, u64) {
    let mut handle = belt_core::run(orch, task, options).await.expect("valid bench options");
    let mut events = handle.events().expect("events");
    // With `--otlp`, an exporter per run (started by `case`), shut down (its last spans sent) inside the
    // measurement.
    let exporter = EXPORTER.lock().expect("the exporter slot").take();
    let feed = exporter.as_ref().map(|e| e.feed(None));
    let drain = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(4096);
        let mut n = 0u64;
        while events.recv_batch(&mut batch, 4096).await > 0 {
            n += batch.len() as u64;
            if let Some(feed) = &feed {
                feed.on_events(&batch);
            }
            batch.clear();
        }
        n
    });
    let result = handle.result().await;
    let _ = drain.await;
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
        let stats = exporter.stats();
        eprintln!(
            "otlp: {} spans exported, {} dropped, {} failed",
            stats.exported, stats.dropped, stats.failed
        );
    }
    (result.usage.calls, result.status, rss_kib())
}

/// Workload F, the floor: the shape of A with bare sleeps (on the simulated provider's
/// timer) and a semaphore, no engine at all. What A's wall time would be if belt cost
/// nothing.
async fn timer_floor(n: usize, c: usize, l: Duration) -> (u64, RunStatus) {
    let sem = tokio::sync::Semaphore::new(c);
    let call = || async {
        let _permit = sem.acquire().await.expect("open semaphore");
        belt_llm::timer::sleep(l).await;
    };
    call().await;
    futures::stream::iter((0..n).map(|_| call())).buffer_unordered(c).for_each(|_| async {}).await;
    call().await;
    (n as u64 + 2, RunStatus::Completed)
}

/// Workload P, the provider alone: A's calls made straight on the simulated provider, C at
/// a time, from the same plan, each request built as A's orchestrator builds it (see the
/// module docs).
async fn provider_alone(options: &RunOptions, task: &Task, n: usize, c: usize) -> (u64, RunStatus) {
    let model: Arc<str> = Arc::from("simulated/bench");
    let (provider, name) = options.providers.resolve(&model).expect("the bench's simulated provider");
    let width = belt_core::step::index_width(n);
    let call = |step: StepId, prompt: String| {
        let request = LlmRequest::new(&model, prompt).max_tokens(16);
        async move { provider.complete(name, &request, &CallInfo::new(step, 1)).await.is_ok() }
    };
    let mut ok = call(StepId::new("decompose"), decompose_prompt(task)).await;
    // The caller's plan, as A's orchestrator makes it: its memory counts in both.
    let plan = bench_plan(n, false);
    let workers = plan
        .iter()
        .enumerate()
        .map(|(i, s)| call(StepId::indexed("worker", i + 1, width), worker_prompt(task, s)));
    let done: Vec<bool> = futures::stream::iter(workers).buffer_unordered(c).collect().await;
    let prompt = synthesis_prompt(task, done.iter().filter(|&&d| d).count());
    ok &= call(StepId::new("synthesis"), prompt).await && done.iter().all(|&d| d);
    (n as u64 + 2, if ok { RunStatus::Completed } else { RunStatus::Failed })
}

/// Watches the simulated provider from a thread (so the measurement adds nothing to the
/// steps' own memory) and reads the RSS growth whenever the calls in flight reach a new
/// maximum.
struct InFlightSampler {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, u64)>,
}

impl InFlightSampler {
    fn start(provider: Arc<SimulatedProvider>, baseline_kib: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let (mut best, mut growth) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                // Reading /proc costs CPU that the figures count: read it only when the
                // number in flight has grown by 1% since the last reading.
                let now = provider.in_flight();
                if now > best + best / 100 {
                    best = now;
                    growth = rss_kib().saturating_sub(baseline_kib);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (best.max(provider.max_in_flight().min(1)), growth)
        });
        InFlightSampler { done, thread }
    }

    /// The most calls seen in flight, and the RSS growth (KiB) when they were.
    fn stop(self) -> (usize, u64) {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// Workloads A and C: a decomposition call, N workers (independent, or a chain), and one
/// synthesis call.
struct FanOut {
    n: usize,
    chain: bool,
    /// Shared, as a caller keeps a model name it sends with every request (a `&str` would
    /// be copied into a new `Arc<str>` per request).
    model: Arc<str>,
    /// Workers call this set's first tool instead of the model (workload T).
    tools: Option<belt_core::Tools>,
}

#[async_trait]
impl Orchestrator for FanOut {
    fn name(&self) -> &str {
        if self.chain { "chain" } else { "fan-out" }
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        let prompt = decompose_prompt(task);
        let request = LlmRequest::new(&self.model, prompt).max_tokens(16);
        ctx.llm(StepSpec::new("decompose", Tier::Decomposer), request).await?;
        Ok(bench_plan(self.n, self.chain).into())
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        _deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let prompt = worker_prompt(task, subtask);
        if let Some(tools) = &self.tools {
            let arguments = serde_json::json!({"subtask": subtask.id});
            let call = belt_core::llm::ToolCall { id: subtask.id.clone(), name: "echo".into(), arguments };
            // Boxed: the tool call's state would otherwise enlarge every A worker's future
            // (an async fn holds the largest of its branches), and A measures memory per branch.
            let out = Box::pin(ctx.tool(step.clone(), &call, tools)).await?;
            return Ok(AgentOutput::from_reply(subtask, step, belt_core::StepReply::new(out.content)));
        }
        let request = LlmRequest::new(&self.model, prompt).max_tokens(16);
        let reply = ctx.llm(step.clone(), request).await?;
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        _plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let prompt = synthesis_prompt(task, ok);
        let request = LlmRequest::new(&self.model, prompt).max_tokens(16);
        let reply = ctx.llm(StepSpec::new("synthesis", Tier::Executive), request).await?;
        Ok(Synthesis { text: reply.text.to_string() })
    }
}

/// A SQLite database file with its WAL and shared-memory files.
fn remove_db(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The plan of A and C: N subtasks, each depending on the previous one for C's chain.
/// Built without `format!`, as the workers' prompts: the bench measures the engine, and
/// the formatting machinery was ~9% of the fan-out's instructions.
fn bench_plan(n: usize, chain: bool) -> Vec<Subtask> {
    let mut number = itoa::Buffer::new();
    (1..=n)
        .map(|i| {
            let id = number.format(i);
            let s = Subtask::new(id, ["Part ", id].concat());
            if chain && i > 1 { Subtask { dependencies: vec![(i - 1).to_string()], ..s } } else { s }
        })
        .collect()
}

/// The simulated provider's settings for every case: seeded, with the case's latency.
fn bench_sim(args: &Args) -> SimConfig {
    SimConfig::default().seed(1).latency_ms(args.latency_ms).precise_timer(!args.tokio_timer)
}

/// Every case's task.
fn bench_task() -> Task {
    Task::new("Benchmark the engine")
}

/// Every case's run options: the case's concurrency, `provider` as the only provider, and
/// no minimum share of successful workers (a run's figures count whatever it did).
fn bench_options(args: &Args, provider: Arc<dyn belt_core::LlmProvider>) -> RunOptions {
    let mut options = RunOptions::default().concurrency(args.concurrency);
    options.min_success = 0.0;
    options.providers = Providers::new().with(provider);
    options
}

/// B's cascade: `n` workers, every call capped at 16 tokens.
fn bench_cascade(n: usize) -> Cascade {
    let mut cascade = Cascade::new(n, "simulated/bench");
    for t in [&mut cascade.worker, &mut cascade.synthesizer, &mut cascade.executive] {
        t.max_tokens = 16;
    }
    cascade
}

/// B's given plan (given, so that the simulated decomposer does not write a JSON plan of
/// 100,000 items).
fn cascade_plan(n: usize) -> Vec<Subtask> {
    (1..=n).map(|i| Subtask::new(i.to_string(), format!("Part {i} of the benchmark"))).collect()
}

/// The prompt of A's decomposition call.
fn decompose_prompt(task: &Task) -> String {
    format!("Task: {}\nPlan the work.", task.description)
}

/// The prompt of A's synthesis call, over `ok` results.
fn synthesis_prompt(task: &Task, ok: usize) -> String {
    format!("Task: {}\nSynthesize the {ok} results.", task.description)
}

/// The prompt of one of A's workers.
fn worker_prompt(task: &Task, subtask: &Subtask) -> String {
    ["Task: ", &task.description, "\nSubtask ", &subtask.id, ": ", &subtask.description].concat()
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_is_checked_against_its_own_case() {
        let line = |w: &str, l: u64, c: u64, store: &str, key: &str, v: f64| {
            let mut line = serde_json::json!({"workload": w, "n": 10_000, "latency_ms": l, "concurrency": c, "store": store});
            line[key] = v.into();
            line
        };
        let lines = [
            line("A", 0, 64, "memory", "cpu_us_per_call", 1.5),
            line("P", 0, 64, "memory", "cpu_us_per_call", 0.25),
            line("A", 0, 64, "sqlite", "cpu_us_per_call", 7.0),
            line("B", 0, 64, "memory", "cpu_us_per_call", 4.5),
            line("Q", 0, 64, "memory", "cpu_us_per_call", 0.5),
            line("A", 1_000, 10_000, "memory", "kib_per_inflight_branch", 3.1),
            line("P", 1_000, 10_000, "memory", "kib_per_inflight_branch", 1.2),
            line("S", 0, 64, "sqlite", "cpu_us_per_call", 5.0),
        ];
        let checks = checks(&lines);
        let met: Vec<_> = checks.iter().map(|c| c["met"].clone()).collect();
        let (yes, no, none) =
            (serde_json::Value::Bool(true), serde_json::Value::Bool(false), serde_json::Value::Null);
        assert_eq!(
            met,
            [yes.clone(), yes, no.clone(), no.clone(), no.clone(), no.clone(), none.clone(), no, none]
        );
        let figures: Vec<_> = checks.iter().map(|c| c["figure"].as_f64()).collect();
        assert_eq!(
            figures,
            [Some(1.5), Some(1.25), Some(4.5), Some(4.0), Some(3.1), Some(1.9), None, Some(5.5), Some(5.0)]
        );
        assert_eq!(checks[4]["target"], 1.5);
        assert_eq!(checks[8]["target"], serde_json::Value::Null);
    }
}

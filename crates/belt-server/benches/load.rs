//! Load benchmark of `belt serve`'s event delivery: R concurrent runs of the cascade on the
//! simulated provider, S SSE subscribers per run (100 × 10 = 1,000 by default). The server
//! runs in a child process (this binary, re-executed), so its memory is measured alone.
//!
//! ```sh
//! cargo bench -p belt-server --no-default-features --bench load  # 100 runs, 1,000 subscribers
//! cargo bench -p belt-server --no-default-features --bench load -- --runs 20 --subscribers 5 --agents 50 --store memory
//! ```
//!
//! Prints: events delivered and events/s over all subscribers, event latency (from the
//! event's server timestamp to its arrival at a subscriber) p50/p99/max, streams complete
//! (every sequence number from 1 to `run_finished`, no gap, no duplicate), and the server's
//! peak RSS.
#![allow(clippy::unwrap_used)] // a benchmark or an example: it stops at the first failure

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use belt_server::{Limits, RateLimit, Server, ServerConfig};

struct Options {
    runs: usize,
    subscribers: usize,
    agents: usize,
    latency_ms: u64,
    store: String,
    deltas: bool,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        runs: 100,
        subscribers: 10,
        agents: 20,
        latency_ms: 100,
        store: "sqlite".into(),
        deltas: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut next = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--runs" => o.runs = next().parse().expect("--runs N"),
            "--subscribers" => o.subscribers = next().parse().expect("--subscribers N (per run)"),
            "--agents" => o.agents = next().parse().expect("--agents N"),
            "--latency-ms" => o.latency_ms = next().parse().expect("--latency-ms MS"),
            "--store" => o.store = next(),
            // Runs stream their text as `step_delta` events (as `belt serve` asks, and the
            // simulated provider then streams); this leaves them out.
            "--no-deltas" => o.deltas = false,
            _ => {} // `cargo bench` adds --bench
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if args.first().map(String::as_str) == Some("--child-server") {
        runtime.block_on(child_server(&args[1], args.get(2).map(String::as_str) != Some("--no-deltas")));
        return;
    }
    runtime.block_on(parent(options(&args)));
}

/// The server: prints its address, serves until stdin closes.
async fn child_server(store: &str, deltas: bool) {
    let store: Arc<dyn belt_core::store::RunStore> = match store {
        "memory" => Arc::new(belt_core::MemoryStore::new()),
        path => belt_store::open(&format!("sqlite://{path}").parse().unwrap()).await.unwrap(),
    };
    let mut config = ServerConfig::new(common::TOKEN);
    config.limits = Limits { max_running: 1000, max_queued: 1000 };
    config.rate_limit = RateLimit { per_second: 1e6, burst: 1_000_000 };
    config.defaults = common::defaults(100);
    config.stream_deltas = deltas;
    let server = Server::new(config, common::app(), store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("ADDR {}", listener.local_addr().unwrap());
    server
        .serve(listener, async {
            let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
        })
        .await
        .unwrap();
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Stream {
    events: u64,
    latencies_ms: Vec<f64>,
    complete: bool,
}

async fn subscribe(client: reqwest::Client, url: String) -> Stream {
    use futures::StreamExt;
    let response = client.get(&url).bearer_auth(common::TOKEN).send().await.expect("subscribe");
    let mut body = response.bytes_stream();
    let (mut buf, mut out) = (String::new(), Stream { events: 0, latencies_ms: Vec::new(), complete: false });
    let mut expected = 1u64;
    let mut in_order = true;
    while let Some(Ok(chunk)) = body.next().await {
        let now = chrono::Utc::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
            let e: serde_json::Value = serde_json::from_str(data.trim()).expect("JSON event");
            let ts = chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).unwrap();
            out.latencies_ms
                .push((now - ts.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            out.events += 1;
            in_order &= e["seq"].as_u64() == Some(expected);
            expected += 1;
            if e["type"] == "run_finished" {
                out.complete = in_order;
            }
        }
    }
    out
}

async fn parent(o: Options) {
    let dir = std::env::temp_dir().join(format!("belt-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store =
        if o.store == "memory" { "memory".to_string() } else { dir.join("belt.db").display().to_string() };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child-server", &store, if o.deltas { "--deltas" } else { "--no-deltas" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = format!("http://{}", line.trim().strip_prefix("ADDR ").unwrap());
    let idle_kib = rss_kib(pid, "VmRSS:");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(2000).build().unwrap();
    let started = Instant::now();
    let mut streams = Vec::new();
    for i in 0..o.runs {
        let body = serde_json::json!({"task": format!("Load test run {i}"), "agents": o.agents, "sim_latency_ms": o.latency_ms});
        let r: serde_json::Value = client
            .post(format!("{base}/v1/runs"))
            .bearer_auth(common::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = format!("{base}/v1/runs/{}/events", r["run_id"].as_str().expect("accepted"));
        for _ in 0..o.subscribers {
            streams.push(tokio::spawn(subscribe(client.clone(), url.clone())));
        }
    }
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            if peak == u64::MAX {
                return peak;
            }
        }
    });
    let mut latencies = Vec::new();
    let (mut events, mut complete) = (0u64, 0usize);
    for s in streams {
        let s = s.await.unwrap();
        events += s.events;
        complete += usize::from(s.complete);
        latencies.extend(s.latencies_ms);
    }
    let wall = started.elapsed().as_secs_f64();
    let hwm = rss_kib(pid, "VmHWM:");
    sampler.abort();
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let subscribers = o.runs * o.subscribers;
    println!(
        "runs {} × agents {} (simulated, {} ms/call), subscribers {} ({} per run), store {}, step_delta {}",
        o.runs,
        o.agents,
        o.latency_ms,
        subscribers,
        o.subscribers,
        o.store,
        if o.deltas { "on" } else { "off" }
    );
    println!("streams complete (1..run_finished, no gap, no duplicate): {complete}/{subscribers}");
    println!("events delivered {events} in {wall:.2} s: {:.0} events/s", events as f64 / wall);
    println!("event latency ms: p50 {:.1}  p99 {:.1}  max {:.1}", pct(0.50), pct(0.99), pct(1.0));
    println!("server RSS MiB: idle {:.1}, peak {:.1}", idle_kib as f64 / 1024.0, hwm as f64 / 1024.0);
}

//! Runs shared by several processes through one store: `belt run --detach` queues, `belt
//! worker`s drive, `belt serve --no-execute` answers. Each test drives real `belt` processes;
//! each worker logs the simulated provider's calls to a file of its own
//! (`BELT_SIM_CALL_LOG`, a line `STEP ATTEMPT RUN_ID` per call), so a test can tell which
//! process paid for which step of which run.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Dir, belt, code, command, json, stderr, wait};

/// The stores the tests share runs through: SQLite (one file, processes of one host) and
/// PostgreSQL (a schema of its own in the test server, dropped with it).
fn sqlite(dir: &Dir) -> String {
    format!("sqlite://{}", dir.join("shared.db").display())
}

fn postgres() -> belt_testkit::PgSchema {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(belt_testkit::PgSchema::new())
}

/// `belt run` arguments of test run `i`: a small cascade, slow enough to be caught mid-run.
fn run_args(i: usize, agents: u32, latency_ms: u32) -> Vec<String> {
    [
        format!("Survey topic number {i} in depth"),
        "--agents".into(),
        agents.to_string(),
        "--concurrency".into(),
        "4".into(),
        "--sim-latency-ms".into(),
        latency_ms.to_string(),
        "--seed".into(),
        i.to_string(),
        "--quiet".into(),
    ]
    .into()
}

/// Queue run `i` in `store`; its id.
fn submit(dir: &Dir, store: &str, args: &[String]) -> String {
    let mut all: Vec<&str> = vec!["--store", store, "run"];
    all.extend(args.iter().map(String::as_str));
    all.push("--detach");
    let o = belt(dir, &all, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "the run id alone on stdout: {id:?}");
    id
}

/// `belt worker` on `store`, logging its calls to `log`.
fn worker(dir: &Dir, store: &str, name: &str, max_runs: u32, log: &Path) -> Child {
    let max = max_runs.to_string();
    command(dir, &["--store", store, "worker", "--name", name, "--max-runs", &max], Some(log))
        .spawn()
        .expect("start belt worker")
}

/// Every run of the store, by id: its listed status.
fn statuses(dir: &Dir, store: &str) -> BTreeMap<String, String> {
    let o = belt(dir, &["--store", store, "runs", "list", "--json", "--limit", "1000"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Wait until every run in `ids` has finished (at most `limit`); their statuses.
fn wait_finished(dir: &Dir, store: &str, ids: &[String], limit: Duration) -> BTreeMap<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let all = statuses(dir, store);
        let done = ids.iter().all(|id| {
            all.get(id).is_some_and(|s| !matches!(s.as_str(), "queued" | "running" | "interrupted"))
        });
        if done {
            return all.into_iter().filter(|(id, _)| ids.contains(id)).collect();
        }
        assert!(Instant::now() < deadline, "runs did not finish within {limit:?}: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_finished`] (at most 120 s) from an async test, off its runtime's threads.
async fn wait_finished_async(dir: &Dir, store: &str, ids: &[String]) -> BTreeMap<String, String> {
    let (dir_path, store, ids) = (dir.0.clone(), store.to_string(), ids.to_vec());
    tokio::task::spawn_blocking(move || {
        // The test's own `Dir` removes the directory; this view of it must not.
        wait_finished(&std::mem::ManuallyDrop::new(Dir(dir_path)), &store, &ids, Duration::from_secs(120))
    })
    .await
    .unwrap()
}

/// A finished run's result from the store.
fn result(dir: &Dir, store: &str, id: &str) -> Value {
    let o = belt(dir, &["--store", store, "runs", "export", id], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
}

/// The same run, unbroken, in one `belt run` on a memory store.
fn unbroken(dir: &Dir, args: &[String]) -> Value {
    let mut all: Vec<&str> = vec!["--store", "memory", "run"];
    all.extend(args.iter().map(String::as_str));
    all.push("--json");
    let o = belt(dir, &all, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    json(&o)
}

/// Calls per (run, step) in a call log.
fn calls_by_run(log: &Path) -> BTreeMap<(String, String), u32> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        let (Some(step), Some(_attempt), Some(run)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("a call log line without a run id: {line:?}");
        };
        *m.entry((run.to_string(), step.to_string())).or_default() += 1;
    }
    m
}

/// SIGTERM `child` and wait for it (at most `limit`).
fn terminate(child: Child, limit: Duration) -> Output {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait(child, limit)
}

/// The outcome a rerun must match: text, usage and cost of the whole run.
fn same_outcome(a: &Value, b: &Value, what: &str) {
    assert_eq!(a["final_output"], b["final_output"], "{what}: final output");
    assert_eq!(a["usage"]["input_tokens"], b["usage"]["input_tokens"], "{what}: input tokens");
    assert_eq!(a["usage"]["output_tokens"], b["usage"]["output_tokens"], "{what}: output tokens");
    let cost = |v: &Value| v["cost_usd"].as_f64().unwrap();
    assert!((cost(a) - cost(b)).abs() < 1e-9, "{what}: cost {} vs {}", cost(a), cost(b));
}

#[test]
fn detached_runs_are_driven_by_a_worker_as_a_direct_run_would_be() {
    let dir = Dir::new("workers-detach");
    detached_runs_on(&dir, &sqlite(&dir));
    let schema = postgres();
    detached_runs_on(&dir, &schema.url());
}

fn detached_runs_on(dir: &Dir, store: &str) {
    let specs: Vec<Vec<String>> = (0..3).map(|i| run_args(i, 6, 20)).collect();
    let ids: Vec<String> = specs.iter().map(|a| submit(dir, store, a)).collect();
    assert!(statuses(dir, store).values().all(|s| s == "queued"), "queued until a worker takes them");

    let log = dir.join(&format!("w1-{}.log", store.split(':').next().unwrap_or("store")));
    let w = worker(dir, store, "w1", 2, &log);
    let finished = wait_finished(dir, store, &ids, Duration::from_secs(60));
    assert!(finished.values().all(|s| s == "completed"), "{finished:?}");
    let out = terminate(w, Duration::from_secs(30));
    assert_eq!(code(&out), 0, "a worker asked to stop exits 0: {}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("3 runs finished here"), "{said}");

    let calls = calls_by_run(&log);
    for (id, args) in ids.iter().zip(&specs) {
        let r = result(dir, store, id);
        same_outcome(&r, &unbroken(dir, args), id);
        let paid = calls.iter().filter(|((run, _), _)| run == id).count() as u64;
        assert_eq!(paid, r["usage"]["calls"].as_u64().unwrap(), "{id}: each step called once");
    }
}

#[test]
fn a_worker_without_a_shared_store_or_with_bad_arguments_says_so() {
    let dir = Dir::new("workers-bad");
    let o = belt(&dir, &["--store", "memory", "run", "A task", "--detach"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--detach queues the run in the store"), "{}", stderr(&o));
    let o = belt(&dir, &["--store", &sqlite(&dir), "worker", "--max-runs", "0"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--max-runs must be at least 1"), "{}", stderr(&o));
}

/// Three workers drive runs; one is killed (SIGKILL) in the middle of its runs. Its runs
/// move on to the others once its lease expires and end as unbroken runs do, and no step
/// the killed worker completed is called again.
#[test]
fn runs_of_a_killed_worker_finish_on_the_others_without_paying_twice() {
    for trial in 0..3 {
        let dir = Dir::new(&format!("workers-kill-{trial}"));
        // Two trials on PostgreSQL, one on SQLite (workers of one host).
        let schema = (trial < 2).then(postgres);
        let store = schema.as_ref().map_or_else(|| sqlite(&dir), |s| s.url());
        let specs: Vec<Vec<String>> = (0..6).map(|i| run_args(10 * trial + i, 16, 150)).collect();
        let ids: Vec<String> = specs.iter().map(|a| submit(&dir, &store, a)).collect();
        let logs: Vec<PathBuf> = (0..3).map(|w| dir.join(&format!("w{w}.log"))).collect();
        let mut workers: Vec<Option<Child>> =
            (0..3).map(|w| Some(worker(&dir, &store, &format!("w{w}"), 2, &logs[w]))).collect();

        // Kill worker 0 once it has paid for some calls, and has more in flight.
        let victim = workers[0].take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::calls_so_far(&logs[0]) < 6 + 4 * trial {
            assert!(Instant::now() < deadline, "worker 0 made no calls");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut victim = victim;
        victim.kill().unwrap();
        victim.wait().unwrap();
        let killed_calls = calls_by_run(&logs[0]);
        let victims_runs: std::collections::BTreeSet<&String> = killed_calls.keys().map(|(r, _)| r).collect();
        assert!(!victims_runs.is_empty());

        let finished = wait_finished(&dir, &store, &ids, Duration::from_secs(120));
        assert!(finished.values().all(|s| s == "completed"), "trial {trial}: {finished:?}");
        for w in workers.iter_mut().filter_map(Option::take) {
            let out = terminate(w, Duration::from_secs(30));
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }

        let survivors: Vec<_> = logs[1..].iter().map(|l| calls_by_run(l)).collect();
        for (id, args) in ids.iter().zip(&specs) {
            let r = result(&dir, &store, id);
            same_outcome(&r, &unbroken(&dir, args), &format!("trial {trial}, run {id}"));
            for agent in r["agents"].as_array().unwrap() {
                let step = agent["step"].as_str().unwrap().to_string();
                let key = (id.clone(), step.clone());
                let by_victim = killed_calls.get(&key).copied().unwrap_or(0);
                let by_others: u32 = survivors.iter().map(|s| s.get(&key).copied().unwrap_or(0)).sum();
                if agent["replayed"] == true {
                    // Completed and recorded by the killed worker: never called again.
                    assert_eq!((by_victim, by_others), (1, 0), "trial {trial}: {id} {step} called again");
                } else {
                    // Called where the run finished; at most once more by the killed worker,
                    // if it was in flight there when it died.
                    assert_eq!(by_others, 1, "trial {trial}: {id} {step}");
                    assert!(by_victim <= 1, "trial {trial}: {id} {step}");
                }
            }
        }
        let moved = ids.iter().filter(|id| victims_runs.contains(id)).count();
        assert!(moved >= 1, "trial {trial}: the killed worker had runs that moved on");
    }
}

/// The events of an SSE body so far: (id, data) of each complete event.
fn sse_events(text: &str) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data = serde_json::from_str(v.trim()).ok();
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            out.push((id, data));
        }
    }
    out
}

/// Read `response`'s SSE body until `done` holds for the events so far (at most 60 s).
async fn read_sse_until(
    response: &mut reqwest::Response,
    done: impl Fn(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    let mut text = String::new();
    loop {
        let events = sse_events(&text);
        if done(&events) {
            return events;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(60), response.chunk())
            .await
            .expect("events within 60 s")
            .expect("the stream reads")
            .expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// An API node (`belt serve --no-execute`) and a worker in two processes over one store: a
/// run submitted to the node is driven by the worker; the node streams its events live, and
/// resumes the stream with `Last-Event-ID`; a cancel sent to the node stops a run on the
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_streams_and_cancels_runs_that_a_worker_drives() {
    let dir = Dir::new("workers-api-node");
    let schema = belt_testkit::PgSchema::new().await;
    let store = schema.url();
    let home = dir.join("node");
    std::fs::create_dir_all(&home).unwrap();
    let args = ["--store", store.as_str(), "serve", "--no-execute", "--addr", "127.0.0.1:0"];
    let mut node = common::serve::start_in(&dir.0, &home, &args, Some("tok-node"), &[]);
    node.wait_listening();
    let w = worker(&dir, &store, "w1", 2, &dir.join("w1.log"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let post = |body: Value| {
        let c = c.clone();
        let url = format!("{}/v1/runs", node.base);
        async move {
            let r = c.post(url).bearer_auth("tok-node").json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "queued", "an API node queues every run: {v}");
            v["run_id"].as_str().unwrap().to_string()
        }
    };
    let events_of = |id: &str, after: Option<u64>| {
        let mut req = c.get(format!("{}/v1/runs/{id}/events", node.base)).bearer_auth("tok-node");
        if let Some(n) = after {
            req = req.header("last-event-id", n.to_string());
        }
        req.send()
    };

    // Streamed live while the worker drives it; the stream dropped and resumed.
    let id = post(
        serde_json::json!({"task": "Survey the field", "agents": 8, "concurrency": 2, "sim_latency_ms": 150}),
    )
    .await;
    let mut first = events_of(&id, None).await.unwrap();
    let is_worker_done = |e: &(u64, Value)| e.1["type"] == "step_completed" && e.1["tier"] == "worker";
    let seen = read_sse_until(&mut first, |evs| evs.iter().filter(|e| is_worker_done(e)).count() >= 2).await;
    drop(first);
    let last = seen.last().unwrap().0;
    let mut resumed = events_of(&id, Some(last)).await.unwrap();
    let rest = read_sse_until(&mut resumed, |evs| evs.iter().any(|e| e.1["type"] == "run_finished")).await;
    assert_eq!(rest[0].0, last + 1, "the stream resumes right after the last event seen");
    let ids: Vec<u64> = seen.iter().chain(&rest).map(|e| e.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let finished = &rest.last().unwrap().1;
    assert_eq!(finished["status"], "completed", "{finished}");
    let run: Value = c
        .get(format!("{}/v1/runs/{id}", node.base))
        .bearer_auth("tok-node")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    let doc = c
        .get(format!("{}/v1/runs/{id}/documents/md", node.base))
        .bearer_auth("tok-node")
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200, "the node renders the report of a run it did not drive");

    // Cancelled through the node while the worker drives it.
    let id = post(
        serde_json::json!({"task": "A long survey", "agents": 30, "concurrency": 2, "sim_latency_ms": 300}),
    )
    .await;
    let mut stream = events_of(&id, None).await.unwrap();
    read_sse_until(&mut stream, |evs| evs.iter().any(is_worker_done)).await;
    let r =
        c.post(format!("{}/v1/runs/{id}/cancel", node.base)).bearer_auth("tok-node").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "cancelling", "{v}");
    let all = read_sse_until(&mut stream, |evs| evs.iter().any(|e| e.1["type"] == "run_finished")).await;
    let end = &all.last().unwrap().1;
    assert_eq!(end["status"], "cancelled", "{end}");
    let completed = all.iter().filter(|e| is_worker_done(e)).count();
    assert!(completed < 30, "the run stopped early: {completed} of 30 workers completed");

    // A queued run is cancelled at the node itself: no worker ever takes it.
    let out = terminate(w, Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = post(serde_json::json!({"task": "Never run", "agents": 3})).await;
    let r =
        c.post(format!("{}/v1/runs/{id}/cancel", node.base)).bearer_auth("tok-node").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let listed = statuses(&dir, &store);
    assert_eq!(listed[&id], "cancelled");
}

/// SIGTERM to a worker in the middle of its runs: the calls in flight finish and are
/// recorded, the runs go back to the queue at once, and the next worker resumes them
/// without calling any step the first one called — not even the ones in flight.
#[test]
fn a_stopped_worker_hands_its_runs_back_with_every_call_recorded() {
    let dir = Dir::new("workers-sigterm");
    let schema = postgres();
    let store = schema.url();
    let specs: Vec<Vec<String>> = (0..2).map(|i| run_args(40 + i, 16, 300)).collect();
    let ids: Vec<String> = specs.iter().map(|a| submit(&dir, &store, a)).collect();
    let first_log = dir.join("first.log");
    let first = worker(&dir, &store, "first", 2, &first_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::calls_so_far(&first_log) < 8 {
        assert!(Instant::now() < deadline, "the first worker made no calls");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stopped_at = Instant::now();
    let out = terminate(first, Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stopped_at.elapsed() < Duration::from_secs(5), "it stops once its calls in flight end");
    let said = stderr(&out);
    assert!(said.contains("handed back to the queue") && said.contains("2 handed back"), "{said}");
    let listed = statuses(&dir, &store);
    assert!(ids.iter().all(|id| listed[id] == "queued"), "back in the queue at once: {listed:?}");

    let second_log = dir.join("second.log");
    let second = worker(&dir, &store, "second", 2, &second_log);
    let finished = wait_finished(&dir, &store, &ids, Duration::from_secs(60));
    assert!(finished.values().all(|s| s == "completed"), "{finished:?}");
    terminate(second, Duration::from_secs(30));
    let (before, after) = (calls_by_run(&first_log), calls_by_run(&second_log));
    assert!(!before.is_empty() && !after.is_empty());
    for key in before.keys() {
        assert!(!after.contains_key(key), "{key:?} was called by both workers");
    }
    for (id, args) in ids.iter().zip(&specs) {
        same_outcome(&result(&dir, &store, id), &unbroken(&dir, args), id);
    }
}

/// A plan file of `n` independent subtasks (so a fake provider need not write one).
fn plan_file(dir: &Dir, n: usize) -> String {
    let plan: Vec<Value> = (1..=n)
        .map(|i| serde_json::json!({"id": i.to_string(), "description": format!("Part {i} of the survey"), "dependencies": []}))
        .collect();
    let path = dir.join("plan.json");
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    path.display().to_string()
}

/// belt.toml with the fake provider `fake` at `base_url` and `limits` (TOML lines).
fn fake_config(dir: &Dir, base_url: &str, limits: &str) -> String {
    let text = format!(
        "[providers.fake]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key_env = \"FAKE_API_KEY\"\n{limits}\n\
         [prices.\"fake/m\"]\ninput = 1.0\noutput = 2.0\n\n\
         [budget_pools.team]\ncalls_per_day = 25\n"
    );
    let path = dir.join("belt.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `belt worker`s and `belt run --detach` with the fake provider's configuration and key.
fn fake_command(dir: &Dir, config: &str, store: &str, args: &[&str]) -> std::process::Command {
    let mut all = vec!["--config", config, "--store", store];
    all.extend(args);
    let mut cmd = command(dir, &all, None);
    cmd.env("FAKE_API_KEY", "test-key");
    cmd
}

fn fake_reply() -> belt_llm::fake_server::FakeResponse {
    use belt_llm::fake_server::{FakeResponse, FakeUsage, UsageShape};
    let usage = FakeUsage { input: 40, output: 8, ..FakeUsage::default() };
    FakeResponse::openai_stream("m", &["A part ", "of the answer."], "stop", usage, UsageShape::WithFinish)
}

/// Queue `runs` runs of the fake model over a plan of `subtasks`; their ids.
fn submit_fake(
    dir: &Dir,
    config: &str,
    store: &str,
    runs: usize,
    subtasks: usize,
    extra: &[&str],
) -> Vec<String> {
    let plan = plan_file(dir, subtasks);
    (0..runs)
        .map(|i| {
            let task = format!("Survey {i}");
            let mut args = vec![
                "run",
                task.as_str(),
                "--model",
                "fake/m",
                "--plan",
                plan.as_str(),
                "--detach",
                "--quiet",
            ];
            args.extend(extra);
            let o = wait(fake_command(dir, config, store, &args).spawn().unwrap(), Duration::from_secs(60));
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect()
}

fn fake_workers(dir: &Dir, config: &str, store: &str, n: usize) -> Vec<Child> {
    (0..n)
        .map(|w| {
            let name = format!("w{w}");
            fake_command(dir, config, store, &["worker", "--max-runs", "4", "--name", &name]).spawn().unwrap()
        })
        .collect()
}

/// Four workers against a fake provider whose `max_concurrency` is 3 in belt.toml: never
/// more than 3 requests in flight at the provider, summed over the four; and a 429 with
/// Retry-After answered to one worker pauses all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_keep_one_concurrency_limit_and_one_pause() {
    use belt_llm::fake_server::{FakeResponse, FakeServer};
    let dir = Dir::new("workers-limits");
    let schema = belt_testkit::PgSchema::new().await;
    let store = schema.url();
    let fake = FakeServer::start().await.unwrap();
    fake.set_default(fake_reply().first_byte_after(Duration::from_millis(250)));
    for _ in 0..8 {
        fake.push(fake_reply().first_byte_after(Duration::from_millis(250)));
    }
    fake.push(
        FakeResponse::openai_error(429, "Rate limit reached", "requests", Some("rate_limit_exceeded"))
            .header("retry-after", "3"),
    );
    let config = fake_config(&dir, &fake.openai_base_url(), "max_concurrency = 3");
    let ids = submit_fake(&dir, &config, &store, 4, 6, &[]);
    let workers = fake_workers(&dir, &config, &store, 4);
    let finished = wait_finished_async(&dir, &store, &ids).await;
    for w in workers {
        terminate(w, Duration::from_secs(30));
    }
    assert!(finished.values().all(|s| s == "completed"), "{finished:?}");
    assert_eq!(fake.max_in_flight(), 3, "the shared cap, reached and never passed by four workers");
    let arrivals = fake.arrivals();
    let refused = arrivals.iter().find(|(_, status)| *status == 429).expect("the 429 was served").0;
    let paused: Vec<f64> = arrivals
        .iter()
        .map(|(t, _)| t.saturating_duration_since(refused).as_secs_f64())
        .filter(|&d| d > 0.3 && d < 2.8)
        .collect();
    assert!(paused.is_empty(), "requests {paused:?} s after the 429 (Retry-After: 3 s)");
    // Four runs of 6 workers and their executive, and the refused call once more.
    assert_eq!(arrivals.len(), 4 * 7 + 1, "{} requests", arrivals.len());
}

/// Four workers racing for one budget pool of 25 calls a day: the pool is never passed,
/// whatever the interleaving, and `belt budget show` says what was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_never_pass_a_budget_pool() {
    use belt_llm::fake_server::FakeServer;
    let dir = Dir::new("workers-pool");
    let schema = belt_testkit::PgSchema::new().await;
    let store = schema.url();
    let fake = FakeServer::start().await.unwrap();
    fake.set_default(fake_reply().first_byte_after(Duration::from_millis(50)));
    let config = fake_config(&dir, &fake.openai_base_url(), "");
    let ids = submit_fake(&dir, &config, &store, 6, 6, &["--budget-pool", "team"]);
    let workers = fake_workers(&dir, &config, &store, 4);
    let finished = wait_finished_async(&dir, &store, &ids).await;
    for w in workers {
        terminate(w, Duration::from_secs(30));
    }
    assert!(fake.calls().len() <= 25, "{} calls under a pool of 25", fake.calls().len());
    assert!(fake.calls().len() >= 20, "the pool was drawn to near its cap: {}", fake.calls().len());
    assert!(finished.values().any(|s| s == "budget_exhausted"), "{finished:?}");
    let o = wait(
        fake_command(&dir, &config, &store, &["budget", "show", "--json"]).spawn().unwrap(),
        Duration::from_secs(30),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let pools = json(&o);
    let day = pools.as_array().unwrap().iter().find(|p| p["period"] == "day").unwrap().clone();
    assert_eq!(day["spent"]["calls"].as_u64().unwrap() as usize, fake.calls().len(), "{pools}");
    assert_eq!(day["reserved"]["calls"], 0, "nothing stays reserved: {pools}");
}

//! The crash matrix: `belt run`, and `belt serve` running the same spec, SIGKILLed at many
//! moments drawn from a seed — while decomposing, among the workers, among the
//! synthesizers, during the executive's call, after the end — then `belt resume RUN_ID` on
//! the same store (in one trial of three, that resume is killed too and resumed again). Every trial must end as the unbroken run does (same final output, usage
//! and cost) and no step recorded before the kill may be called again. The unbroken run is
//! one `belt run`: a run given to `belt serve` must end the same, so the front ends agree too.
//!
//! A moment is a point of progress, not of time: "once the simulated provider has started
//! call K, plus D ms", read from its call log (`BELT_SIM_CALL_LOG`). So the moments fall
//! where they are meant to on a loaded machine as on an idle one, and a seed names the same
//! trials everywhere. The seed is printed with every failure; `BELT_CRASH_SEED=N` replays
//! it, `BELT_CRASH_TRIALS=N` runs N trials per front end instead of 12.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::serve::{self, http};
use common::{Dir, belt, calls, calls_so_far, code, command, json, only_run_id, stderr, wait};

const TASK: &str = "Assess the resilience of coastal cities to sea-level rise";
const AGENTS: u64 = 60;
/// Synthesizers of 60 workers: 12 over the workers, 2 over those (the shape is 60, 12, 2, 1).
const SYNTHESIZERS: u64 = 12 + 2;
/// Calls of an unbroken run: the decomposition, the workers, the synthesizers, the executive.
const CALLS: u64 = 1 + AGENTS + SYNTHESIZERS + 1;
/// Trials run at once: the runs mostly wait on simulated latency, so a few in parallel keep
/// the matrix short without starving one another on two cores.
const PARALLEL: usize = 4;

/// The run of every trial, as `belt run` arguments and as the JSON body of `POST /v1/runs`.
fn run_args() -> Vec<String> {
    let agents = AGENTS.to_string();
    ["run", TASK, "--agents", &agents, "--concurrency", "6", "--sim-latency-ms", "15", "--seed", "7"]
        .into_iter()
        .chain(["--model", "simulated/default", "--quiet", "--json", "--out", "out"])
        .map(String::from)
        .collect()
}

fn run_body() -> String {
    json!({"task": TASK, "agents": AGENTS, "concurrency": 6, "sim_latency_ms": 15, "seed": 7, "model": "simulated/default"})
        .to_string()
}

/// The unbroken run both front ends are compared with (made once).
fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = Dir::new("crash-reference");
        let log = dir.join("calls.log");
        let args = run_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let full = belt(&dir, &args, Some(&log));
        assert_eq!(code(&full), 0, "{}", stderr(&full));
        let full = json(&full);
        assert_eq!(full["status"], "completed");
        assert_eq!(
            calls(&log).values().sum::<u32>() as u64,
            CALLS,
            "the matrix's phases assume {CALLS} calls"
        );
        full
    })
}

/// splitmix64: a small, fixed generator, so a seed means the same trials on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// When a trial kills: once call `after_call` has started (0: right after the start), plus
/// `delay_ms`; `None`: after the run has ended. With `resume_too`, the first `belt resume` is
/// killed as well, once it has started that many calls of its own (plus `delay_ms`): a crash
/// while recovering from a crash.
#[derive(Debug, Clone, Copy)]
struct Moment {
    phase: &'static str,
    after_call: Option<u64>,
    delay_ms: u64,
    resume_too: Option<u64>,
}

/// `n` moments from `seed`, spread over the phases of the run: the first trials cover each
/// phase once; the rest fall anywhere, weighted by how many calls each phase makes.
fn moments(seed: u64, n: usize) -> Vec<Moment> {
    let mut rng = Rng(seed);
    let workers_end = 1 + AGENTS;
    let synth_end = workers_end + SYNTHESIZERS;
    let phases: [(&'static str, Option<(u64, u64)>); 7] = [
        ("start-up", Some((0, 0))),
        ("decomposition", Some((1, 1))),
        ("workers", Some((2, workers_end))),
        ("workers", Some((2, workers_end))),
        ("synthesizers", Some((workers_end + 1, synth_end))),
        ("executive", Some((CALLS, CALLS))),
        ("after the end", None),
    ];
    (0..n)
        .map(|i| {
            let (phase, range) = match phases.get(i) {
                Some(p) => *p,
                None => match rng.between(0, CALLS + 1) {
                    0 => ("start-up", Some((0, 0))),
                    k if k > CALLS => ("after the end", None),
                    1 => ("decomposition", Some((1, 1))),
                    k if k <= workers_end => ("workers", Some((k, k))),
                    k if k <= synth_end => ("synthesizers", Some((k, k))),
                    _ => ("executive", Some((CALLS, CALLS))),
                },
            };
            let after_call = range.map(|(lo, hi)| rng.between(lo, hi));
            // One trial in three crashes again while resuming.
            let resume_too = (i % 3 == 2 && after_call.is_some()).then(|| rng.between(0, CALLS / 2));
            Moment { phase, after_call, delay_ms: rng.between(0, 20), resume_too }
        })
        .collect()
}

/// Wait until the call log holds `k` calls, or `child` has exited (at most 60 s).
fn wait_for_call(log: &Path, k: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (calls_so_far(log) as u64) < k {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if Instant::now() > deadline {
            // Never leave the process behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("call {k} never started");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The steps the store holds as completed for the run, and the run's status.
fn recorded(dir: &Dir, run_id: &str, trial: &str) -> (BTreeSet<String>, String) {
    let shown = json(&belt(dir, &["runs", "show", run_id, "--json"], None));
    let steps: BTreeSet<String> = match shown["steps"].as_array() {
        Some(steps) => steps.iter().map(|s| s["step"].as_str().unwrap().to_string()).collect(),
        // It finished: every step is in the result.
        None => {
            shown["agents"].as_array().unwrap().iter().map(|a| a["step"].as_str().unwrap().into()).collect()
        }
    };
    let listed = json(&belt(dir, &["runs", "list", "--json"], None));
    let status = listed[0]["status"].as_str().unwrap().to_string();
    assert!(["interrupted", "completed"].contains(&status.as_str()), "{trial}: status {status}");
    (steps, status)
}

/// After the kill: resume the run in `dir`'s store (if it was recorded) and check it ends as
/// the unbroken run did, paying for nothing twice. `true` when the kill interrupted it.
fn resume_and_compare(dir: &Dir, trial: &str, before: &Path, resume_too: Option<u64>, delay_ms: u64) -> bool {
    let listed = json(&belt(dir, &["runs", "list", "--json"], None));
    if listed.as_array().is_some_and(|runs| runs.is_empty()) {
        // Killed before the run was recorded: nothing was called, nothing to resume.
        assert!(calls(before).is_empty(), "{trial}: calls without a recorded run");
        return false;
    }
    let run_id = only_run_id(dir);
    // What the dead process completed, as recorded in the store.
    let (mut recorded, mut status) = recorded(dir, &run_id, trial);
    // Every call made so far, by any process.
    let mut paid = calls(before);
    // Every recorded step was called before the kill (it was not invented).
    assert!(recorded.iter().all(|s| paid.contains_key(s)), "{trial}: a recorded step has no call");

    if let (Some(k), "interrupted") = (resume_too, status.as_str()) {
        // A crash while resuming: kill the resume too, then look again.
        let mid = dir.join("calls-mid.log");
        // Nobody reads its output: a full pipe would stop it before its end.
        let mut child = command(dir, &["resume", &run_id, "--quiet", "--json", "--out", "out"], Some(&mid))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn belt resume");
        wait_for_call(&mid, k, &mut child);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let again = calls(&mid);
        for step in &recorded {
            assert!(
                !again.contains_key(step),
                "{trial}: {step} was completed before the kill and called again"
            );
        }
        let (now, now_status) = self::recorded(dir, &run_id, trial);
        assert!(
            recorded.is_subset(&now),
            "{trial}: steps recorded before the first kill were lost by the second"
        );
        for (step, n) in again {
            *paid.entry(step).or_default() += n;
        }
        assert!(now.iter().all(|s| paid.contains_key(s)), "{trial}: a recorded step has no call");
        println!(
            "{trial}: its resume killed too (at its call {k}, or its end); {} steps recorded now",
            now.len()
        );
        (recorded, status) = (now, now_status);
    }

    let after = dir.join("calls-after.log");
    let resumed = belt(dir, &["resume", &run_id, "--quiet", "--json", "--out", "out"], Some(&after));
    if status == "completed" {
        assert_eq!(code(&resumed), 0, "{trial}: {}", stderr(&resumed));
        assert!(stderr(&resumed).contains("nothing to resume"), "{trial}: {}", stderr(&resumed));
        assert!(calls(&after).is_empty(), "{trial}: a finished run made calls when resumed");
        let result = json(&belt(dir, &["runs", "export", &run_id], None));
        same_end(&result, trial);
        return false;
    }
    assert_eq!(code(&resumed), 0, "{trial}: {}", stderr(&resumed));
    let resumed = json(&resumed);
    assert_eq!(resumed["status"], "completed", "{trial}");
    assert_eq!(resumed["run_id"].as_str().unwrap(), run_id, "{trial}");

    // No completed step was called again.
    let again = calls(&after);
    for step in &recorded {
        assert!(!again.contains_key(step), "{trial}: {step} was completed before the kill and called again");
    }
    assert!((recorded.len() + again.len()) as u64 >= CALLS, "{trial}: some step was never run");
    same_end(&resumed, trial);
    println!("{trial}: {} steps recorded before the kill, {} called on resume", recorded.len(), again.len());
    true
}

/// The end is the unbroken run's: output, usage and cost (each completed call counted once).
fn same_end(result: &Value, trial: &str) {
    let full = reference();
    assert_eq!(result["status"], "completed", "{trial}");
    assert_eq!(result["final_output"], full["final_output"], "{trial}");
    assert_eq!(result["usage"], full["usage"], "{trial}");
    let cost = |v: &Value| v["cost_usd"].as_f64().unwrap();
    assert!((cost(result) - cost(full)).abs() < 1e-9, "{trial}: cost {} vs {}", cost(result), cost(full));
}

/// `belt run` killed at `m`, then resumed.
fn cli_trial(label: &str, m: Moment) -> bool {
    let dir = Dir::new("crash-cli");
    let before = dir.join("calls-before.log");
    let args = run_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = command(&dir, &args, Some(&before));
    if m.after_call.is_some() {
        // Nobody reads the output of a run that is killed: a full pipe would stop it first.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn belt run");
    match m.after_call {
        Some(k) => {
            wait_for_call(&before, k, &mut child);
            std::thread::sleep(Duration::from_millis(m.delay_ms));
            child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
            let _ = child.wait();
        }
        None => {
            let done = wait(child, Duration::from_secs(60));
            assert_eq!(code(&done), 0, "{label}: {}", stderr(&done));
        }
    }
    resume_and_compare(&dir, label, &before, m.resume_too, m.delay_ms)
}

/// `belt serve` given the run over HTTP, killed at `m`, then `belt resume` on its store.
fn serve_trial(label: &str, m: Moment) -> bool {
    let dir = Dir::new("crash-serve");
    let before = dir.join("calls-before.log");
    let token = "crash-matrix-token";
    // The store `belt` uses in `dir` by default (under `dir/home`), so `belt resume` there
    // finds the server's runs, as it would on the server's machine.
    let mut server = serve::start_in(
        &dir.0,
        &dir.join("home"),
        &["serve", "--addr", "127.0.0.1:0", "--model", "simulated/default"],
        Some(token),
        &[("BELT_SIM_CALL_LOG", &before)],
    );
    server.wait_listening();
    server.wait_healthy();
    let (status, body) = http(&server.base, "POST", "/v1/runs", Some(token), Some(&run_body())).unwrap();
    assert_eq!(status, 202, "{label}: {body}");
    let run_id = serde_json::from_str::<Value>(&body).unwrap()["run_id"].as_str().unwrap().to_string();
    match m.after_call {
        Some(k) => {
            wait_for_call(&before, k, &mut server.child);
            std::thread::sleep(Duration::from_millis(m.delay_ms));
        }
        None => {
            // The run's end, as the server reports it (at most 60 s).
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (_, view) =
                    http(&server.base, "GET", &format!("/v1/runs/{run_id}"), Some(token), None).unwrap();
                let view: Value = serde_json::from_str(&view).unwrap_or_default();
                if view["result"]["status"].is_string() {
                    break;
                }
                assert!(Instant::now() < deadline, "{label}: the run did not end");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    server.kill();
    let recorded = json(&belt(&dir, &["runs", "list", "--json"], None));
    if let Some(run) = recorded.as_array().and_then(|r| r.first()) {
        assert_eq!(
            run["run_id"],
            run_id.as_str(),
            "{label}: the run accepted over HTTP is the one in the store"
        );
    }
    resume_and_compare(&dir, label, &before, m.resume_too, m.delay_ms)
}

/// Run `trials` on `PARALLEL` threads; each gets its label (with the seed) and moment.
fn matrix(front_end: &str, trial: fn(&str, Moment) -> bool) {
    let seed = env_number("BELT_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let n = env_number("BELT_CRASH_TRIALS").map_or(12, |n| n.max(1) as usize);
    let moments = moments(seed, n);
    reference();
    // Shown with any failure: the harness prints a failed test's output.
    println!("crash matrix ({front_end}): seed {seed}; replay with BELT_CRASH_SEED={seed}");
    let mut interrupted = 0;
    for (c, chunk) in moments.chunks(PARALLEL).enumerate() {
        let handles: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let m = *m;
                let label = format!(
                    "{front_end} trial {} of seed {seed} (BELT_CRASH_SEED={seed}): kill in {} {}",
                    c * PARALLEL + i,
                    m.phase,
                    match (m.after_call, m.resume_too) {
                        (Some(k), None) => format!("after call {k} + {} ms", m.delay_ms),
                        (Some(k), Some(r)) =>
                            format!("after call {k} + {} ms, and its resume after {r}", m.delay_ms),
                        (None, _) => "after the run ended".into(),
                    }
                );
                std::thread::spawn(move || trial(&label, m))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(true) => interrupted += 1,
                Ok(false) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
    // Most moments fall inside the run; a matrix that never caught one would test nothing.
    assert!(
        interrupted * 2 >= n,
        "{front_end}: only {interrupted} of {n} trials interrupted the run (seed {seed})"
    );
}

#[test]
fn belt_run_killed_at_random_moments_resumes_as_an_unbroken_run() {
    matrix("belt run", cli_trial);
}

#[test]
fn belt_serve_killed_at_random_moments_resumes_as_an_unbroken_run() {
    matrix("belt serve", serve_trial);
}

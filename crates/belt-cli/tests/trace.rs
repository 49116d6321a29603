//! `belt runs trace ID` end to end: a simulated run with retries and tool calls, then its
//! waterfall as text (lines, nesting, bars on one axis) and as JSON.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Dir, belt, code, json, only_run_id, stderr};

/// A run of 6 tool-using agents where some calls fail once and are retried.
fn traced_run(dir: &Dir) -> String {
    let o = belt(
        dir,
        &[
            "run",
            "Plan a city park",
            "--agents",
            "6",
            "--tools",
            "calculator",
            "--sim-fail-rate",
            "0.3",
            "--retries",
            "3",
            "--seed",
            "3",
            "--quiet",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    only_run_id(dir)
}

#[test]
fn the_waterfall_nests_tool_loops_under_their_agent_on_one_time_axis() {
    let dir = Dir::new("trace");
    let id = traced_run(&dir);
    // A prefix names the run, as for `belt runs show`.
    let o = belt(&dir, &["runs", "trace", &id[..8]], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with(&format!("run {id} · ")), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(" |")).collect();
    // Not a terminal: 80 columns, every line within them.
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(rows[0].starts_with("decompose "), "{text}");
    for n in 1..=6 {
        let agent = rows.iter().position(|l| l.starts_with(&format!("worker/00{n} "))).unwrap();
        assert!(rows[agent + 1].starts_with("  round/01 "), "{text}");
        assert!(
            rows[agent + 2].starts_with("  round/01/tool/1 ") && rows[agent + 2].ends_with("tool"),
            "{text}"
        );
    }
    // Bars share one axis: top-level steps in the order they started, each bar starting
    // no earlier than the one before; a child never starts before its agent.
    let bar_start = |l: &str| {
        let bar = &l[l.find('|').unwrap() + 1..];
        bar.chars().take_while(|c| *c == ' ').count()
    };
    let tops: Vec<usize> = rows.iter().filter(|l| !l.starts_with(' ')).map(|l| bar_start(l)).collect();
    assert!(tops.windows(2).all(|w| w[0] <= w[1]), "{tops:?}\n{text}");
    assert!(tops[1] > tops[0], "the workers start after the plan\n{text}");
    let mut agent = 0;
    for l in &rows {
        if l.starts_with(' ') {
            assert!(bar_start(l) >= agent, "{text}");
        } else {
            agent = bar_start(l);
        }
    }
    assert!(text.contains("retry (") || text.contains("retries ("), "no retry shown\n{text}");
    assert!(text.contains('~'), "no retry wait drawn\n{text}");
    assert!(text.lines().any(|l| l.starts_with("worker ")), "no worker totals\n{text}");

    // The same as data.
    let o = belt(&dir, &["runs", "trace", &id, "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let t = json(&o);
    let steps = t["steps"].as_array().unwrap();
    assert_eq!(steps.len(), rows.len());
    let starts: Vec<u64> =
        steps.iter().filter(|s| s["depth"] == 0).map(|s| s["start_ms"].as_u64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    let retried: Vec<&serde_json::Value> =
        steps.iter().filter(|s| !s["retries"].as_array().unwrap().is_empty()).collect();
    assert!(!retried.is_empty());
    for s in &retried {
        assert!(s["attempts"].as_u64().unwrap() >= 2, "{s}");
        assert!(s["retry_wait_ms"].as_u64().unwrap() > 0, "{s}");
    }
    let tool = steps.iter().find(|s| s["kind"] == "tool").unwrap();
    assert_eq!(tool["parent"], tool["step"].as_str().unwrap().split("/round/").next().unwrap());
    let workers = t["tiers"].as_array().unwrap().iter().find(|t| t["tier"] == "worker").unwrap();
    // 6 agents × (2 rounds + 1 tool call).
    assert_eq!(workers["steps"], 18, "{t}");
    for s in steps {
        let (start, end) = (s["start_ms"].as_u64().unwrap(), s["end_ms"].as_u64().unwrap());
        assert!(start <= end && end <= t["duration_ms"].as_u64().unwrap(), "{s}");
    }
}

#[test]
fn an_unknown_run_is_named_with_where_to_look() {
    let dir = Dir::new("trace-unknown");
    let o = belt(&dir, &["runs", "trace", "no-such-run"], None);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("belt runs list"), "{}", stderr(&o));
}

#[test]
fn time_waiting_for_the_providers_limits_is_its_own_column() {
    let dir = Dir::new("trace-limits");
    // One call at a time to the provider, 4 independent workers (the research strategy's
    // subtasks have no dependencies) of 200 ms each: all but one wait.
    std::fs::write(dir.join("belt.toml"), "[providers.simulated]\nmax_concurrency = 1\n").unwrap();
    let o = belt(
        &dir,
        &[
            "run",
            "Plan a city park",
            "--agents",
            "4",
            "--strategy",
            "research",
            "--sim-latency-ms",
            "200",
            "--quiet",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = only_run_id(&dir);
    let o = belt(&dir, &["runs", "trace", &id, "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let t = json(&o);
    let workers: Vec<&serde_json::Value> =
        t["steps"].as_array().unwrap().iter().filter(|s| s["tier"] == "worker").collect();
    assert_eq!(workers.len(), 4);
    let waits: Vec<u64> = workers.iter().map(|s| s["limit_wait_ms"].as_u64().unwrap()).collect();
    // Served one after another: the last waits for the three before it.
    assert!(waits.iter().max().unwrap() >= &500, "{waits:?}");
    for s in &workers {
        let total = s["end_ms"].as_u64().unwrap() - s["start_ms"].as_u64().unwrap();
        let parts = ["queued_ms", "retry_wait_ms", "limit_wait_ms", "call_ms"];
        let sum: u64 = parts.iter().map(|p| s[*p].as_u64().unwrap()).sum();
        assert_eq!(sum, total, "the parts add up to the step's time: {s}");
        assert!(s["call_ms"].as_u64().unwrap() < 400, "the call itself is ~200 ms: {s}");
    }
    let text = String::from_utf8(belt(&dir, &["runs", "trace", &id], None).stdout).unwrap();
    assert!(text.contains("limits "), "{text}");
}

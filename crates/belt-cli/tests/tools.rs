//! Agents that use tools, through the real `belt` binary: MCP servers' tools (`--mcp`,
//! `--tools`, `belt mcp tools`), resumed runs that do not call a tool twice, a server that
//! dies mid-run, a hung tool's dead letter retried with `belt dlq retry`, sandboxed code
//! and web search against a local backend.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// `NAME=env K=V… PYTHON facts_server.py`: the facts server, its calls logged to `log`.
fn facts(name: &str, log: &Path, extra_env: &[(&str, &str)]) -> String {
    let deps = test_deps();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools_data/facts_server.py");
    let mut env = format!("FACTS_LOG={}", log.display());
    for (k, v) in extra_env {
        env.push_str(&format!(" {k}={v}"));
    }
    format!("{name}=env {env} {} {}", deps.python.display(), script.display())
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// The steps of a `--json` result, with their status.
fn steps(result: &serde_json::Value) -> Vec<(String, String)> {
    result["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (a["step"].as_str().unwrap_or("").to_string(), a["status"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn output_of<'a>(result: &'a serde_json::Value, step: &str) -> &'a str {
    result["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["step"] == step)
        .and_then(|a| a["output"].as_str())
        .unwrap_or_else(|| panic!("no output for {step}"))
}

#[test]
fn workers_call_an_mcp_servers_tools_and_a_resumed_run_does_not_call_them_again() {
    let dir = Dir::new("tools-mcp");
    let log = dir.join("facts.log");
    let sim = dir.join("sim.log");
    let mcp = facts("facts", &log, &[]);
    // Slow model calls: the run is killed while the workers' second rounds are in flight,
    // after every tool call returned.
    let args = [
        "run",
        "The history of tea",
        "-n",
        "3",
        "--mcp",
        &mcp,
        "--tools",
        "facts",
        "--sim-latency-ms",
        "400",
        "--json",
    ];
    let mut child = command(&dir, &args, Some(&sim)).spawn().expect("spawn belt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&log) < 3 {
        assert!(Instant::now() < deadline, "the workers did not call the tool");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().expect("kill belt");
    let _ = child.wait();
    assert_eq!(lines(&log), 3, "one call per worker");
    let run_id = only_run_id(&dir);

    let o = belt(&dir, &["resume", &run_id, "--json"], Some(&sim));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    assert_eq!(lines(&log), 3, "no tool call was made again on resume");
    let calls = calls(&sim);
    for w in 1..=3 {
        let round1 = format!("worker/00{w}/round/01");
        assert_eq!(calls.get(&round1), Some(&1), "{round1} was replayed: {calls:?}");
        assert!(output_of(&r, &format!("worker/00{w}/round/01/tool/1")).contains("is well documented"));
    }
    assert!(r["final_output"].as_str().unwrap().contains("`facts_lookup` returned: fact #"));
}

#[test]
fn a_server_that_dies_mid_call_is_a_tool_error_and_the_run_goes_on() {
    let dir = Dir::new("tools-crash");
    let log = dir.join("facts.log");
    let mcp = facts("facts", &log, &[("FACTS_DIE_AT", "2")]);
    let o = belt(&dir, &["run", "Tea", "-n", "3", "--mcp", &mcp, "--tools", "facts.lookup", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    let tools: Vec<String> =
        (1..=3).map(|w| output_of(&r, &format!("worker/00{w}/round/01/tool/1")).to_string()).collect();
    let died: Vec<&String> = tools.iter().filter(|t| t.contains("exited")).collect();
    assert_eq!(died.len(), 1, "{tools:#?}");
    assert!(died[0].contains("\"is_error\":true"), "{}", died[0]);
    assert_eq!(tools.iter().filter(|t| t.contains("is well documented")).count(), 2, "{tools:#?}");
    // The other workers' calls went to the restarted server.
    assert_eq!(lines(&log), 3);
}

#[test]
fn a_hung_tool_leaves_a_dead_letter_that_belt_dlq_retry_runs_again() {
    let dir = Dir::new("tools-dlq");
    let log = dir.join("facts.log");
    let slow = dir.join("slow");
    std::fs::write(&slow, "").unwrap();
    let mcp = facts("facts", &log, &[("FACTS_SLOW", slow.to_str().unwrap())]);
    let o = belt(
        &dir,
        &["run", "Tea", "-n", "1", "--mcp", &mcp, "--tools", "facts", "--tool-timeout", "1", "--json"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert!(output_of(&r, "worker/001/round/01/tool/1").contains("timed out after 1.0s"), "{}", r);
    assert_eq!(lines(&log), 1, "a tool that may have acted is not called twice");

    let o = belt(&dir, &["dlq", "list", "--json"], None);
    let letters = json(&o);
    let letters = letters.as_array().expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["error_kind"], "timeout");
    assert_eq!(letters[0]["request"]["tool_call"]["name"], "facts_lookup");
    let id = letters[0]["id"].to_string();

    std::fs::remove_file(&slow).unwrap();
    let o = belt(&dir, &["dlq", "retry", &id], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("fact #2"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(lines(&log), 2);
    let o = belt(&dir, &["dlq", "list", "--json"], None);
    assert_eq!(json(&o), serde_json::json!([]));
}

#[test]
fn belt_mcp_tools_lists_a_servers_tools_and_bad_servers_and_names_are_clear_errors() {
    let dir = Dir::new("tools-list");
    let log = dir.join("facts.log");
    let o = belt(&dir, &["mcp", "tools", "facts", "--mcp", &facts("facts", &log, &[]), "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let listed = json(&o);
    assert_eq!(listed[0]["name"], "facts_lookup");
    assert_eq!(listed[0]["server_name"], "lookup");
    assert_eq!(listed[0]["parameters"]["required"], serde_json::json!(["topic"]));

    let o = belt(&dir, &["run", "Tea", "--mcp", "x=/no/such/server", "--tools", "x"], None);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/server"), "{}", stderr(&o));
    let o = belt(&dir, &["run", "Tea", "--tools", "calculater"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown tool `calculater` (did you mean `calculator`?)"), "{}", stderr(&o));
    let o = belt(&dir, &["run", "Tea", "--mcp", &facts("facts", &log, &[]), "--tools", "facts.nope"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("has no tool `nope`; its tools are: lookup"), "{}", stderr(&o));
    let o = belt(&dir, &["run", "Tea", "--mcp", "y=http://127.0.0.1:9/mcp", "--tools", "y"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("127.0.0.1:9"), "{}", stderr(&o));
    assert_eq!(lines(&log), 0, "listing calls no tool");
}

#[test]
fn the_reference_server_serves_workers_over_stdio() {
    let dir = Dir::new("tools-everything");
    let deps = test_deps();
    let server = deps
        .python
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|d| d.join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"));
    let server: PathBuf = server.expect("test deps dir");
    let mcp = format!("ev=node {} stdio", server.display());
    let o = belt(&dir, &["run", "Say hello", "-n", "2", "--mcp", &mcp, "--tools", "ev.echo", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert!(output_of(&r, "worker/001/round/01/tool/1").contains("Echo: "), "{r}");
    assert!(steps(&r).iter().all(|(_, s)| s == "completed"), "{:?}", steps(&r));
}

/// The fake SearXNG of `tools_data/searxng.py`, killed when dropped.
struct Searxng(std::process::Child, u16);

impl Searxng {
    fn start(log: &Path) -> Searxng {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools_data/searxng.py");
        let mut child = std::process::Command::new(test_deps().python)
            .arg(script)
            .env("SEARCH_LOG", log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the fake SearXNG");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout).read_line(&mut line).expect("the port line");
        Searxng(child, line.trim().parse().expect("a port"))
    }
}

impl Drop for Searxng {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_swarm_searches_a_configured_backend_and_the_report_lists_its_sources() {
    let dir = Dir::new("tools-web");
    let log = dir.join("search.log");
    let searxng = Searxng::start(&log);
    let args = ["run", "The history of tea", "--pattern", "swarm", "-n", "2", "--tools", "web", "--json"];
    let mut cmd = command(&dir, &args, None);
    cmd.env("BELT_SEARXNG_URL", format!("http://127.0.0.1:{}", searxng.1));
    let o = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    assert_eq!(lines(&log), 2, "each specialist searched once");
    let urls: Vec<&str> =
        r["sources"].as_array().unwrap().iter().map(|s| s["url"].as_str().unwrap()).collect();
    let base = format!("http://127.0.0.1:{}", searxng.1);
    // The simulated model asks for the fewest results the tool's schema allows: one.
    assert_eq!(urls, [format!("{base}/tea")]);
    let report = std::fs::read_to_string(r["documents"][0]["path"].as_str().unwrap()).unwrap();
    assert!(report.contains(&format!("{base}/tea")) && report.contains("A history of tea"), "{report}");

    // Without a backend, `web` is refused before anything runs, saying how to configure one.
    let o = belt(&dir, &["run", "Tea", "--tools", "web"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("BELT_SEARXNG_URL"), "{}", stderr(&o));
}

#[test]
fn a_coder_run_executes_its_program_in_the_sandbox() {
    let dir = Dir::new("tools-coder");
    let o = belt(&dir, &["run", "List the primes below 50", "--pattern", "coder", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    let out = r["final_output"].as_str().unwrap();
    assert!(out.contains("```python"), "{out}");
    assert!(out.contains("status: exit code 0"), "{out}");
    assert!(
        out.contains("Primes below 50: [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]"),
        "{out}"
    );
}

#[test]
fn a_workflow_files_agents_use_its_mcp_servers_and_run_code_and_validate_names_a_wrong_server() {
    let dir = Dir::new("tools-workflow");
    let log = dir.join("facts.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools_data/facts_server.py");
    let flow = format!(
        "name: facts
mcp_servers:
  facts:
    command: {python}
    args: [{script}]
    env: {{FACTS_LOG: {log}}}
agents:
  - {{id: researcher, role: a researcher, tools: [facts.lookup]}}
  - {{id: coder, role: a programmer, tools: [run_code]}}
pattern: sequential
steps:
  - {{id: look, agent: researcher, prompt: Find a fact about tea}}
  - {{id: run, agent: coder, prompt: Run a program}}
",
        python = test_deps().python.display(),
        script = script.display(),
        log = log.display()
    );
    std::fs::write(dir.join("flow.yaml"), &flow).unwrap();
    let o = belt(&dir, &["run", "-f", "flow.yaml", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    assert!(output_of(&r, "steps/look/round/01/tool/1").contains("fact #1"));
    assert!(
        output_of(&r, "steps/run/round/01/tool/1").contains("status: exit code"),
        "it ran in the sandbox"
    );
    assert_eq!(lines(&log), 1);

    std::fs::write(dir.join("flow.yaml"), flow.replace("[facts.lookup]", "[fakts.lookup]")).unwrap();
    let o = belt(&dir, &["validate", "flow.yaml"], None);
    assert_eq!(code(&o), 2);
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(said.contains("flow.yaml:8:50: agents[0].tools[0]: unknown tool `fakts.lookup`"), "{said}");
}

//! What every end-to-end test of the `belt` binary shares: a command with a clean
//! environment, so no test ever reaches a real provider, a local Ollama, the user's store or
//! configuration, whatever the machine has set; a temporary directory; a bounded wait for a
//! child; the simulated provider's call log; and (in [`serve`]) a `belt serve` process.
// Each test binary uses a part of this module.
#![allow(dead_code)]

pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// API key variables of the built-in providers, and the web search backends' (a test names
/// the backend it runs against).
const KEYS: &[&str] = &[
    "BELT_SEARXNG_URL",
    "BRAVE_API_KEY",
    "BRAVE_SEARCH_API_KEY",
    "TAVILY_API_KEY",
    "BELT_WEB_SEARCH",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "XAI_API_KEY",
    "GROQ_API_KEY",
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "MISTRAL_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
];

/// `belt ARGS` in `cwd`, keeping its runs under `home` (`BELT_HOME`); stdin empty,
/// stdout and stderr piped. Callers add or override variables after this.
pub fn belt_command(cwd: &Path, home: &Path, args: &[&str]) -> Command {
    program_command(Path::new(env!("CARGO_BIN_EXE_belt")), cwd, home, args)
}

/// `PROGRAM ARGS` with the environment of [`belt_command`]: for a client (an MCP client,
/// say) that starts belt itself, passing its own environment on.
pub fn program_command(program: &Path, cwd: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("BELT_HOME", home)
        .env_remove("BELT_MODEL")
        .env_remove("BELT_STORE")
        .env_remove("BELT_CONFIG")
        .env_remove("BELT_SIM_CALL_LOG")
        .env_remove("BELT_API_TOKEN")
        // Never a local Ollama: nothing listens on port 9.
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in KEYS {
        cmd.env_remove(key);
    }
    cmd
}

/// A temporary directory, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let d = std::env::temp_dir().join(format!("belt-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create a temporary directory");
        Dir(d)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `belt ARGS` in `dir` (its runs under `dir/home`), logging simulated calls to `call_log`.
pub fn command(dir: &Dir, args: &[&str], call_log: Option<&Path>) -> Command {
    let mut cmd = belt_command(&dir.0, &dir.join("home"), args);
    if let Some(log) = call_log {
        cmd.env("BELT_SIM_CALL_LOG", log);
    }
    cmd
}

/// Run `belt ARGS` to the end (at most 60 s).
pub fn belt(dir: &Dir, args: &[&str], call_log: Option<&Path>) -> Output {
    let child = command(dir, args, call_log).spawn().expect("spawn belt");
    wait(child, Duration::from_secs(60))
}

/// Wait for `child` at most `limit`, reading its pipes meanwhile (a large `--json` would
/// otherwise fill a pipe and block it); killed and a failed test past the limit.
pub fn wait(mut child: Child, limit: Duration) -> Output {
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    let err = drain(child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("belt did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// stdout as JSON (a failed test, showing both streams, if it is not).
pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), stderr(o))
    })
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Provider calls per StepId, from a simulated call log (`BELT_SIM_CALL_LOG`).
pub fn calls(log: &Path) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let step = line.split_whitespace().next().unwrap_or_default().to_string();
        *m.entry(step).or_default() += 1;
    }
    m
}

/// The number of calls in a call log so far.
pub fn calls_so_far(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// The id of the one run in `dir`'s store.
pub fn only_run_id(dir: &Dir) -> String {
    let o = belt(dir, &["runs", "list", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let runs = json(&o);
    let runs = runs.as_array().expect("an array of runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["run_id"].as_str().expect("a run id").to_string()
}

/// The programs some tests check belt's output with, as scripts/test-deps installs them
/// (pinned, under the target directory): Python with python-docx and the MCP SDK, and the
/// MCP Inspector's CLI.
pub struct TestDeps {
    pub python: PathBuf,
    pub inspector: PathBuf,
}

/// [`TestDeps`], installed first when missing (the script is quick when they are there). A
/// failed install fails the test: a missing checker must never pass for a passed check.
pub fn test_deps() -> TestDeps {
    // The binary is TARGET/debug/belt; the dependencies live in TARGET/test-deps.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_belt"));
    let target = bin.parent().and_then(Path::parent).expect("the binary sits in TARGET/PROFILE");
    let deps = target.join("test-deps");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-deps");
    let status = Command::new(&script)
        .env("BELT_TEST_DEPS", &deps)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(status.success(), "{} failed: the tests need python3 with venv, and npm", script.display());
    TestDeps {
        python: deps.join("py/bin/python"),
        inspector: deps.join("npm/node_modules/.bin/mcp-inspector"),
    }
}

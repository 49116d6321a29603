//! Workload H: A's fan-out through the OpenAI-compatible adapter over real HTTP/1.1.
//!
//! ```text
//! belt-bench --workload H --n 10000                 # fake server in a child process
//! belt-bench --workload H --n 10000 --no-stream     # whole `chat.completion` replies
//! belt-bench --workload H --n 1000 --url http://127.0.0.1:8080/v1 --model qwen3
//! ```
//!
//! Without `--url` the bench starts the fake OpenAI server (`belt_llm::fake_server`) in a
//! process of its own (this binary with `--serve-fake`), so that `cpu_us_per_call` is the
//! client's CPU alone: the engine, the adapter, reqwest and hyper, the kernel's side of the
//! client's sockets. The server process reports the TCP connections it accepted and the
//! requests it answered during each repetition, which shows keep-alive and the pool at work
//! (at most one connection per concurrent call, however many calls).
//!
//! With `--url` the same fan-out goes to any OpenAI-compatible base URL (the key from
//! `OPENAI_API_KEY`, if set); the server's counts are then unknown (`null`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use belt_llm::fake_server::{FakeResponse, FakeServer, FakeUsage, UsageShape};
use belt_llm::{ProviderSpec, Providers, SimConfig, SimulatedProvider};

/// Workload H's options.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// H: the OpenAI-compatible base URL to call (e.g. `http://127.0.0.1:8080/v1`) instead
    /// of the fake server the bench starts in a process of its own.
    #[arg(long, value_name = "BASE_URL")]
    pub url: Option<String>,
    /// H: the model asked for.
    #[arg(long, default_value = "gpt-4.1-mini")]
    pub model: String,
    /// H: ask for whole replies (`stream: false`) instead of SSE streams.
    #[arg(long)]
    pub no_stream: bool,
    /// Internal: be H's fake server (print its base URL, answer count requests on stdin).
    #[arg(long, hide = true)]
    pub serve_fake: bool,
}

/// Where H's calls go: a child fake server, or `--url`.
pub struct Target {
    base_url: String,
    key: String,
    stream: bool,
    server: Option<Mutex<ServerChild>>,
}

/// The fake server's process and its control pipes.
struct ServerChild {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the server saw: TCP connections accepted, requests answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub requests: u64,
}

impl Target {
    /// `--url`, or a fake server started now in a child process.
    pub fn start(args: &HttpArgs) -> Target {
        let stream = !args.no_stream;
        if let Some(url) = &args.url {
            let key = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| "sk-bench".into());
            return Target { base_url: url.clone(), key, stream, server: None };
        }
        let exe = std::env::current_exe().expect("own path");
        let mut command = Command::new(exe);
        command.arg("--serve-fake");
        if !stream {
            command.arg("--no-stream");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake server process");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut base_url = String::new();
        stdout.read_line(&mut base_url).expect("the fake server's URL");
        let base_url = base_url.trim().to_string();
        assert!(base_url.starts_with("http://"), "the fake server did not start: {base_url:?}");
        let server = Some(Mutex::new(ServerChild { child, stdin, stdout }));
        Target { base_url, key: "sk-bench".into(), stream, server }
    }

    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The simulated provider and a fresh `openai` provider (its own connection pool) at
    /// the target, configured as `belt run` configures it from `OPENAI_BASE_URL`.
    pub fn providers(&self, sim: SimConfig) -> Providers {
        let mut spec = ProviderSpec::builtin("openai").expect("the built-in openai provider");
        spec.stream = self.stream;
        let (base, key) = (self.base_url.clone(), self.key.clone());
        let env = move |v: &str| match v {
            "OPENAI_BASE_URL" => Some(base.clone()),
            "OPENAI_API_KEY" => Some(key.clone()),
            _ => None,
        };
        let openai = spec
            .build(&env, Some(belt_llm::PriceTable::builtin_arc()))
            .expect("a valid base URL")
            .expect("the key is set");
        Providers::new().with(Arc::new(SimulatedProvider::new(sim))).with(openai)
    }

    /// The server's counts so far (`None` for `--url`).
    pub fn counts(&self) -> Option<Counts> {
        let server = self.server.as_ref()?;
        let mut server = server.lock().ok()?;
        writeln!(server.stdin, "counts").ok()?;
        server.stdin.flush().ok()?;
        let mut line = String::new();
        server.stdout.read_line(&mut line).ok()?;
        let mut numbers = line.split_whitespace().map(|n| n.parse::<u64>().ok());
        Some(Counts { accepted: numbers.next()??, requests: numbers.next()?? })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && let Ok(mut server) = server.into_inner()
        {
            // Closing its stdin ends the server.
            drop(server.stdin);
            let _ = server.child.wait();
        }
    }
}

/// `--serve-fake`: the fake server of H, until stdin closes. Prints its base URL, then
/// answers each `counts` line with `ACCEPTED REQUESTS`.
pub fn serve_fake(args: &HttpArgs) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let server = runtime.block_on(FakeServer::start()).expect("start the fake server");
    let usage = FakeUsage { input: 20, output: 8, cache_read: 0, cache_write: 0, reasoning: 0 };
    let model = "gpt-4.1-mini";
    server.set_default(if args.no_stream {
        FakeResponse::openai_json(model, "Bench reply.", "stop", usage)
    } else {
        FakeResponse::openai_stream(model, &["Bench ", "reply."], "stop", usage, UsageShape::EmptyChoices)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.openai_base_url());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "counts" {
            let _ = writeln!(out, "{} {}", server.accepted_connections(), server.requests().len());
            let _ = out.flush();
        }
    }
    drop(server);
}

/// The model name H's workers ask for: `openai/<--model>`.
pub fn model(args: &HttpArgs) -> &'static str {
    Box::leak(format!("openai/{}", args.model).into_boxed_str())
}

/// Workload R, the transport's floor: H's calls as bare reqwest POSTs (the same client
/// settings, a body like the adapter's, the response read chunk by chunk and dropped), no
/// engine, no adapter, no parsing. H − R − A is what the adapter itself costs.
pub async fn raw_floor(target: &Target, n: usize, c: usize) -> (u64, belt_core::RunStatus) {
    use futures::StreamExt;
    let mut headers = reqwest::header::HeaderMap::new();
    headers
        .insert(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/json"));
    let mut auth =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", target.key)).expect("ASCII key");
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .user_agent("belt-bench")
        .build()
        .expect("a reqwest client");
    let url = format!("{}/chat/completions", target.base_url.trim_end_matches('/'));
    let stream_options = if target.stream { r#","stream_options":{"include_usage":true}"# } else { "" };
    let call = |i: usize| {
        let body = format!(
            r#"{{"model":"gpt-4.1-mini","messages":[{{"role":"user","content":"Task: Benchmark the engine\nSubtask {i}: Part {i}"}}],"max_tokens":16,"stream":{}{stream_options}}}"#,
            target.stream
        );
        let request = client.post(&url).body(body);
        async move {
            let Ok(mut response) = request.send().await else { return false };
            let ok = response.status().is_success();
            while let Ok(Some(_)) = response.chunk().await {}
            ok
        }
    };
    let ok = futures::stream::iter(0..n + 2)
        .map(call)
        .buffer_unordered(c)
        .fold(0u64, |ok, good| async move { ok + u64::from(good) })
        .await;
    let status =
        if ok == (n + 2) as u64 { belt_core::RunStatus::Completed } else { belt_core::RunStatus::Failed };
    (ok, status)
}

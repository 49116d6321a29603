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
    /// R, Y: make each call a task of its own (`tokio::spawn`), as the engine runs each
    /// worker, instead of polling all calls in the bench's one task.
    #[arg(long)]
    pub spawn_calls: bool,
    /// Internal: be H's fake server (print its base URL, answer count requests on stdin).
    #[arg(long, hide = true)]
    pub serve_fake: bool,
}

/// Where H's calls go: a child fake server, or `--url`.
pub struct Target {
    base_url: String,
    spawn_calls: bool,
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
            return Target {
                base_url: url.clone(),
                key,
                stream,
                server: None,
                spawn_calls: args.spawn_calls,
            };
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
        Target { base_url, key: "sk-bench".into(), stream, server, spawn_calls: args.spawn_calls }
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
    let call = |i: usize| {
        let request = client.post(&url).body(raw_body(target, i));
        spawned(target, async move {
            let Ok(mut response) = request.send().await else { return false };
            let ok = response.status().is_success();
            while let Ok(Some(_)) = response.chunk().await {}
            ok
        })
    };
    raw_calls(n, c, call).await
}

/// The request body R, Y and Z send for call `i`: like the adapter's.
fn raw_body(target: &Target, i: usize) -> bytes::Bytes {
    let stream_options = if target.stream { r#","stream_options":{"include_usage":true}"# } else { "" };
    format!(
        r#"{{"model":"gpt-4.1-mini","messages":[{{"role":"user","content":"Task: Benchmark the engine\nSubtask {i}: Part {i}"}}],"max_tokens":16,"stream":{}{stream_options}}}"#,
        target.stream
    )
    .into()
}

/// A request of Y and Z: `uri` with the headers the adapter's client sends.
fn raw_request(
    target: &Target,
    uri: &hyper::Uri,
    host: &hyper::header::HeaderValue,
    body: bytes::Bytes,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    use hyper::header;
    let mut request = hyper::Request::new(http_body_util::Full::new(body));
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::HOST, host.clone());
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    let auth = format!("Bearer {}", target.key);
    headers.insert(header::AUTHORIZATION, header::HeaderValue::from_str(&auth).expect("ASCII key"));
    headers.insert(header::USER_AGENT, header::HeaderValue::from_static("belt-bench"));
    request
}

/// Read a response's body frame by frame and drop it, as R does; whether it was a 2xx.
async fn drain_response(response: hyper::Response<hyper::body::Incoming>) -> bool {
    use http_body_util::BodyExt;
    let ok = response.status().is_success();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return false;
        }
    }
    ok
}

/// A call of R or Y: `call` itself, or with `--spawn-calls` a task running it.
fn spawned(
    target: &Target,
    call: impl std::future::Future<Output = bool> + Send + 'static,
) -> futures::future::BoxFuture<'static, bool> {
    use futures::FutureExt;
    if target.spawn_calls {
        tokio::spawn(call).map(|done| done.unwrap_or(false)).boxed()
    } else {
        call.boxed()
    }
}

/// `(completed calls, status)` of `ok` out of `n + 2`.
/// The n + 2 calls of a floor (as many as H's run makes), `c` at a time: how many
/// succeeded, and whether all did.
async fn raw_calls<F>(n: usize, c: usize, call: impl FnMut(usize) -> F) -> (u64, belt_core::RunStatus)
where
    F: std::future::Future<Output = bool>,
{
    use futures::StreamExt;
    let ok = futures::stream::iter(0..n + 2)
        .map(call)
        .buffer_unordered(c)
        .fold(0u64, |ok, good| async move { ok + u64::from(good) })
        .await;
    raw_status(ok, n)
}

fn raw_status(ok: u64, n: usize) -> (u64, belt_core::RunStatus) {
    let status =
        if ok == (n + 2) as u64 { belt_core::RunStatus::Completed } else { belt_core::RunStatus::Failed };
    (ok, status)
}

/// The target's chat completions URL, and its `Host` header.
fn raw_uri(target: &Target) -> (hyper::Uri, hyper::header::HeaderValue) {
    let url = format!("{}/chat/completions", target.base_url.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().expect("a valid URL");
    let host = uri.authority().expect("a host").as_str().parse().expect("a valid Host header");
    (uri, host)
}

/// Workload Y: R's calls on hyper-util's legacy client (the pool and connector reqwest
/// wraps), without reqwest's request building, tower layers and response wrapping.
/// http:// URLs only (no TLS connector).
pub async fn hyper_pool_floor(target: &Target, n: usize, c: usize) -> (u64, belt_core::RunStatus) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>();
    let (uri, host) = raw_uri(target);
    let call = |i: usize| {
        let request = client.request(raw_request(target, &uri, &host, raw_body(target, i)));
        spawned(target, async move {
            match request.await {
                Ok(response) => drain_response(response).await,
                Err(_) => false,
            }
        })
    };
    raw_calls(n, c, call).await
}

/// Workload Z: R's calls on C HTTP/1.1 connections of hyper's own (`client::conn::http1`),
/// each sending its share of the calls one after another: no pool, no connector, no
/// request routing. The floor of HTTP/1.1 in Rust on this machine. http:// URLs only.
pub async fn hyper_conn_floor(target: &Target, n: usize, c: usize) -> (u64, belt_core::RunStatus) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (uri, host) = raw_uri(target);
    let path: hyper::Uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse().expect("a path");
    let addr = uri.authority().expect("a host").as_str().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let total = n + 2;
    let mut workers = Vec::new();
    for _ in 0..c.min(total) {
        let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect to the server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        let (next, path, host) = (next.clone(), path.clone(), host.clone());
        let request = move |i| raw_request(target, &path, &host, raw_body(target, i));
        workers.push(async move {
            let mut ok = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || sender.ready().await.is_err() {
                    break ok;
                }
                match sender.send_request(request(i)).await {
                    Ok(response) => ok += u64::from(drain_response(response).await),
                    Err(_) => break ok,
                }
            }
        });
    }
    let ok = futures::future::join_all(workers).await.into_iter().sum();
    raw_status(ok, n)
}

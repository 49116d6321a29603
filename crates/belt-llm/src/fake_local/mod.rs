//! Stateful fake local model servers — llama.cpp's `llama-server`, Ollama and vLLM — for
//! end-to-end tests of what only a server on the user's machine does: a small context
//! window, slots that queue requests, a connection closed after each streamed reply, an
//! outage and a restart on the same port, discovery endpoints.
//!
//! Unlike [`FakeServer`](crate::fake_server::FakeServer), which answers from a script,
//! these compute their answers from the request, as the real servers do:
//!
//! - **Replies** are deterministic: `[h]` (8 hex digits of the prompt's hash), then the
//!   words of the last message, cycled, one word a token, `reply_tokens` tokens in all
//!   (fewer when `max_tokens` or the window cuts it: then the finish reason is `length`).
//!   Streamed as one chunk a token, with usage (and llama.cpp's `timings`), or whole.
//! - **Tokens**: a prompt has `ceil(bytes / 4)` tokens (at least 1), its bytes being every
//!   message's text joined by `\n`; an output token is one word.
//! - **Context**: llama.cpp refuses a prompt of `n_ctx` tokens or more with its exact 400
//!   (`exceed_context_size_error`, with `n_prompt_tokens` and `n_ctx`) and stops a reply
//!   at the window with `length`; with [`LocalConfig::unified_kv`] the window is one pool
//!   shared by every slot (each slot may use all of it), and a reply that runs the pool out
//!   while other slots hold part of it ends with llama.cpp's in-stream error event
//!   (`Context size has been exceeded.`; a 500 when not streamed). vLLM
//!   refuses `prompt + max_tokens > max_model_len` with its 400; Ollama answers a prompt
//!   past its window with its `truncate: false` error (by default the real Ollama
//!   truncates the prompt silently instead — which is why belt must know the window).
//! - **Slots**: at most `slots` requests are processed at once; more wait in a queue
//!   (never refused), as in llama-server.
//! - **Connections**: llama.cpp's fake closes the connection after each streamed reply
//!   although its headers said `Keep-Alive: timeout=5, max=100`
//!   ([`LocalConfig::close_after_stream`]). Before closing it waits a little and reads,
//!   unanswered, whatever request arrives meanwhile: a client that reused the connection
//!   sees it close before any byte of a response, deterministically, which is the race a
//!   real client loses now and then.
//! - **Discovery**: llama.cpp's `GET /props` (`default_generation_settings.n_ctx`,
//!   `total_slots`) and `GET /health`; Ollama's `POST /api/show`; vLLM's `GET /v1/models`
//!   (`max_model_len`).
//! - **Outages**: [`FakeLocalServer::stop`] closes the listener and every connection
//!   (replies in flight break); [`FakeLocalServer::restart`] listens again on the same port.
//! - **Counts**: accepted TCP connections, requests (and those dropped unanswered on a
//!   closing connection), completed replies in all and per
//!   distinct prompt (so that a test can assert no step was called twice), the most
//!   slots busy at once, and overflows.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use belt_llm::fake_local::{FakeLocalServer, LocalConfig};
//!
//! let server = FakeLocalServer::start(LocalConfig::llamacpp().n_ctx(1024).slots(4)).await?;
//! let base_url = server.openai_base_url(); // LLAMACPP_BASE_URL=http://127.0.0.1:PORT/v1
//! // … run belt against it; then an outage:
//! server.stop().await;
//! server.restart().await?;
//! assert!(server.max_completions_per_prompt() <= 1);
//! # let _ = base_url; Ok(()) }
//! ```
//!
//! `cargo run -p belt-llm --features fake-server --example fake_local -- llamacpp` runs
//! one as a process, printing its base URL.

mod http;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::fake_server::RecordedRequest;
use http::{Conn, Request};
use wire::{Counts, Reply};

/// Which server a [`FakeLocalServer`] imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    LlamaCpp,
    Ollama,
    Vllm,
}

/// How a [`FakeLocalServer`] behaves. Start from [`LocalConfig::llamacpp`],
/// [`LocalConfig::ollama`] or [`LocalConfig::vllm`].
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub flavor: Flavor,
    /// The model the server holds (llama.cpp's alias, Ollama's name, vLLM's served id).
    pub model: String,
    /// The window in tokens: llama.cpp's per-slot `n_ctx` (the whole pool with
    /// `unified_kv`), Ollama's `num_ctx`, vLLM's `max_model_len`.
    pub n_ctx: u64,
    /// Requests processed at once; more wait.
    pub slots: usize,
    /// Tokens in a full reply.
    pub reply_tokens: u64,
    /// Pause before each output token.
    pub token_delay: Duration,
    /// Close the connection after each streamed reply, reading (unanswered) what the client
    /// sends within this time first. llama.cpp: 50 ms; the others keep connections.
    pub close_after_stream: Option<Duration>,
    /// llama.cpp with one KV pool for every slot (`--kv-unified`): overflow during a reply
    /// arrives as an error event in the stream.
    pub unified_kv: bool,
    /// Ollama: whether `/api/show` lists `num_ctx` among the model's parameters (a
    /// Modelfile that sets it); if not, Ollama's default window applies.
    pub num_ctx_parameter: bool,
    /// The model accepts images (`/props` modalities, Ollama's capabilities).
    pub vision: bool,
}

impl LocalConfig {
    /// llama-server: 4 slots of 4096 tokens, closing connections after streamed replies.
    pub fn llamacpp() -> Self {
        LocalConfig {
            flavor: Flavor::LlamaCpp,
            model: "smollm2-1.7b-instruct".into(),
            n_ctx: 4096,
            slots: 4,
            reply_tokens: 24,
            token_delay: Duration::ZERO,
            close_after_stream: Some(Duration::from_millis(50)),
            unified_kv: false,
            num_ctx_parameter: false,
            vision: false,
        }
    }

    /// Ollama with `llama3.2` and `num_ctx 8192` in its Modelfile.
    pub fn ollama() -> Self {
        LocalConfig {
            flavor: Flavor::Ollama,
            model: "llama3.2".into(),
            n_ctx: 8192,
            slots: 4,
            close_after_stream: None,
            num_ctx_parameter: true,
            ..LocalConfig::llamacpp()
        }
    }

    /// vLLM serving `Qwen/Qwen2.5-7B-Instruct` with `max_model_len` 32768.
    pub fn vllm() -> Self {
        LocalConfig {
            flavor: Flavor::Vllm,
            model: "Qwen/Qwen2.5-7B-Instruct".into(),
            n_ctx: 32768,
            slots: 16,
            close_after_stream: None,
            ..LocalConfig::llamacpp()
        }
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = model.into();
        self
    }
    pub fn n_ctx(mut self, n_ctx: u64) -> Self {
        self.n_ctx = n_ctx;
        self
    }
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }
    pub fn reply_tokens(mut self, tokens: u64) -> Self {
        self.reply_tokens = tokens;
        self
    }
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }
    pub fn close_after_stream(mut self, linger: Option<Duration>) -> Self {
        self.close_after_stream = linger;
        self
    }
    pub fn unified_kv(mut self, unified: bool) -> Self {
        self.unified_kv = unified;
        self
    }
    pub fn num_ctx_parameter(mut self, listed: bool) -> Self {
        self.num_ctx_parameter = listed;
        self
    }
    pub fn vision(mut self, vision: bool) -> Self {
        self.vision = vision;
        self
    }
}

/// Calls and completed replies of one distinct prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptCount {
    pub calls: u64,
    pub completions: u64,
}

struct State {
    config: LocalConfig,
    slots: Semaphore,
    busy: AtomicUsize,
    max_busy: AtomicUsize,
    /// Completion requests waiting for a slot now, and the most at once.
    waiting: AtomicUsize,
    max_waiting: AtomicUsize,
    connections: AtomicU64,
    completions: AtomicU64,
    overflows: AtomicU64,
    dropped: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
    prompts: Mutex<HashMap<String, PromptCount>>,
    /// Tokens held in a unified KV pool.
    kv_used: Mutex<u64>,
    ids: AtomicU64,
}

/// A fake local model server on `127.0.0.1`. See the [module docs](self). It stops when
/// dropped.
pub struct FakeLocalServer {
    addr: SocketAddr,
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLocalServer {
    /// Start a server on a free port of `127.0.0.1`.
    pub async fn start(config: LocalConfig) -> std::io::Result<FakeLocalServer> {
        FakeLocalServer::start_on(config, 0).await
    }

    /// Start a server on `port` of `127.0.0.1` (0: a free one).
    pub async fn start_on(config: LocalConfig, port: u16) -> std::io::Result<FakeLocalServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            slots: Semaphore::new(config.slots.max(1)),
            config,
            busy: AtomicUsize::new(0),
            max_busy: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            prompts: Mutex::new(HashMap::new()),
            kv_used: Mutex::new(0),
            ids: AtomicU64::new(0),
        });
        let server = FakeLocalServer { addr, state, running: Mutex::new(None) };
        server.run(listener);
        Ok(server)
    }

    fn run(&self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, self.state.clone(), stopped));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { stop, task });
    }

    /// `http://127.0.0.1:PORT`: the server's root (llama.cpp's `/props`, Ollama's `OLLAMA_HOST`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: its OpenAI-compatible base URL.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn config(&self) -> &LocalConfig {
        &self.state.config
    }

    /// An outage: stop listening and close every connection, replies in flight included.
    /// Returns once the port is free.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(running) = running {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// Listen again on the same port (after [`FakeLocalServer::stop`]); counts are kept.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.run(listener);
        Ok(())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(SeqCst)
    }

    /// Every request received so far (discovery and chat).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Chat requests received so far.
    pub fn chat_requests(&self) -> usize {
        self.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
    }

    /// Replies written in full.
    pub fn completions(&self) -> u64 {
        self.state.completions.load(SeqCst)
    }

    /// Calls and completed replies per distinct prompt (its text, as tokens are counted).
    pub fn prompt_counts(&self) -> HashMap<String, PromptCount> {
        self.state.prompts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The most completed replies any one prompt got (1 when no step ran twice).
    pub fn max_completions_per_prompt(&self) -> u64 {
        self.prompt_counts().values().map(|c| c.completions).max().unwrap_or(0)
    }

    /// The most completion requests that waited for a slot at once: 0 when the client never
    /// sent more than the server's slots.
    pub fn max_waiting(&self) -> usize {
        self.state.max_waiting.load(SeqCst)
    }

    /// The most requests processed at once (never above the slots).
    pub fn max_busy_slots(&self) -> usize {
        self.state.max_busy.load(SeqCst)
    }

    /// Requests that arrived on a connection the server was closing after a streamed reply,
    /// read and never answered (the client saw the connection close before any response
    /// byte). Not in [`FakeLocalServer::requests`].
    pub fn dropped_requests(&self) -> u64 {
        self.state.dropped.load(SeqCst)
    }

    /// Requests refused for their size, and replies ended by a full KV pool.
    pub fn overflows(&self) -> u64 {
        self.state.overflows.load(SeqCst)
    }
}

impl Drop for FakeLocalServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = running.stop.send(true);
            running.task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connections.fetch_add(1, SeqCst);
                let state = state.clone();
                connections.spawn(async move { serve(state, Conn::new(stream)).await });
            }
        }
    }
    // Dropping the tasks drops their sockets: every connection closes, as when a server dies.
    connections.shutdown().await;
}

/// What to do with a connection after a response.
enum After {
    KeepAlive,
    Close(Duration),
}

async fn serve(state: Arc<State>, mut conn: Conn) {
    loop {
        let Ok(request) = conn.read_request().await else { return };
        record(&state, &request);
        match route(&state, &mut conn, &request).await {
            Ok(After::KeepAlive) if !request.wants_close() => continue,
            Ok(After::Close(linger)) => {
                if conn.close_after(linger).await {
                    state.dropped.fetch_add(1, SeqCst);
                }
                return;
            }
            _ => return,
        }
    }
}

fn record(state: &State, request: &Request) {
    let recorded = RecordedRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    };
    state.requests.lock().unwrap_or_else(|p| p.into_inner()).push(recorded);
}

fn json_headers(flavor: Flavor) -> Vec<(&'static str, String)> {
    match flavor {
        Flavor::LlamaCpp => vec![
            ("Keep-Alive", "timeout=5, max=100".into()),
            ("Content-Type", "application/json; charset=utf-8".into()),
            ("Server", "llama.cpp".into()),
        ],
        Flavor::Ollama => vec![("Content-Type", "application/json; charset=utf-8".into())],
        Flavor::Vllm => vec![("server", "uvicorn".into()), ("content-type", "application/json".into())],
    }
}

fn sse_headers(flavor: Flavor) -> Vec<(&'static str, String)> {
    match flavor {
        Flavor::LlamaCpp => vec![
            ("Keep-Alive", "timeout=5, max=100".into()),
            ("Content-Type", "text/event-stream".into()),
            ("Server", "llama.cpp".into()),
        ],
        Flavor::Ollama => vec![("Content-Type", "text/event-stream".into())],
        Flavor::Vllm => {
            vec![("server", "uvicorn".into()), ("content-type", "text/event-stream; charset=utf-8".into())]
        }
    }
}

async fn json_reply(conn: &mut Conn, flavor: Flavor, status: u16, body: &str) -> std::io::Result<After> {
    let mut headers = json_headers(flavor);
    if flavor == Flavor::Ollama && !body.starts_with('{') {
        headers = vec![("Content-Type", "text/plain".into())];
    }
    conn.write_whole(status, &headers, body.as_bytes()).await?;
    Ok(After::KeepAlive)
}

async fn route(state: &State, conn: &mut Conn, request: &Request) -> std::io::Result<After> {
    let c = &state.config;
    let flavor = c.flavor;
    match (flavor, request.method.as_str(), request.path.as_str()) {
        (_, "POST", "/v1/chat/completions") | (Flavor::LlamaCpp, "POST", "/chat/completions") => {
            chat(state, conn, request).await
        }
        (Flavor::LlamaCpp, "GET", "/health") => json_reply(conn, flavor, 200, r#"{"status":"ok"}"#).await,
        (Flavor::LlamaCpp, "GET", "/props") => {
            let body = wire::llama_props(&c.model, c.n_ctx, c.slots, c.vision);
            json_reply(conn, flavor, 200, &body).await
        }
        (Flavor::LlamaCpp, "GET", "/v1/models" | "/models") => {
            json_reply(conn, flavor, 200, &wire::llama_models(&c.model, 131_072)).await
        }
        (Flavor::Ollama, "POST", "/api/show") => {
            let asked: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let name = asked["model"].as_str().or(asked["name"].as_str()).unwrap_or_default();
            if name != c.model && name.split(':').next() != Some(c.model.as_str()) {
                return json_reply(conn, flavor, 404, &wire::ollama_no_model(name)).await;
            }
            let num_ctx = c.num_ctx_parameter.then_some(c.n_ctx);
            json_reply(conn, flavor, 200, &wire::ollama_show(num_ctx, 131_072, c.vision)).await
        }
        (Flavor::Ollama, "GET", "/") => json_reply(conn, flavor, 200, "Ollama is running").await,
        (Flavor::Vllm, "GET", "/v1/models") => {
            json_reply(conn, flavor, 200, &wire::vllm_models(&c.model, c.n_ctx)).await
        }
        (Flavor::Vllm, "GET", "/health") => {
            conn.write_whole(200, &json_headers(flavor), b"").await?;
            Ok(After::KeepAlive)
        }
        _ => {
            let (status, body) = wire::not_found(flavor);
            json_reply(conn, flavor, status, &body).await
        }
    }
}

/// A chat request as the fake reads it.
struct Chat {
    prompt: String,
    last_message: String,
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
}

fn read_chat(body: &[u8]) -> Result<Chat, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let text = |m: &serde_json::Value| match &m["content"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => {
            parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    };
    let messages = value["messages"].as_array().cloned().unwrap_or_default();
    let texts: Vec<String> = messages.iter().map(text).collect();
    let max_tokens = value["max_completion_tokens"]
        .as_u64()
        .or(value["max_tokens"].as_u64())
        .or(value["n_predict"].as_u64());
    Ok(Chat {
        prompt: texts.join("\n"),
        last_message: texts.last().cloned().unwrap_or_default(),
        model: value["model"].as_str().unwrap_or("gpt-3.5-turbo").to_string(),
        stream: value["stream"].as_bool().unwrap_or(false),
        include_usage: value["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        max_tokens,
    })
}

/// A prompt's tokens: `ceil(bytes / 4)`, at least 1.
pub fn prompt_tokens(prompt: &str) -> u64 {
    (prompt.len() as u64).div_ceil(4).max(1)
}

/// The reply's tokens: the prompt's hash, then the last message's words, cycled.
fn reply_pieces(prompt: &str, last_message: &str, n: u64) -> Vec<String> {
    let hash = xxhash_rust::xxh3::xxh3_64(prompt.as_bytes()) as u32;
    let words: Vec<&str> = last_message.split_whitespace().collect();
    let mut pieces = vec![format!("[{hash:08x}]")];
    let mut cycle = words.iter().cycle();
    while (pieces.len() as u64) < n {
        pieces.push(format!(" {}", if words.is_empty() { "ok" } else { cycle.next().unwrap_or(&"ok") }));
    }
    pieces.truncate(n as usize);
    pieces
}

/// A slot held, and the busy gauge with it.
struct Busy<'a> {
    state: &'a State,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.state.busy.fetch_sub(1, SeqCst);
    }
}

async fn take_slot(state: &State) -> Option<Busy<'_>> {
    let permit = match state.slots.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            let waiting = state.waiting.fetch_add(1, SeqCst) + 1;
            state.max_waiting.fetch_max(waiting, SeqCst);
            let permit = state.slots.acquire().await;
            state.waiting.fetch_sub(1, SeqCst);
            permit.ok()?
        }
    };
    let now = state.busy.fetch_add(1, SeqCst) + 1;
    state.max_busy.fetch_max(now, SeqCst);
    Some(Busy { state, _permit: permit })
}

async fn chat(state: &State, conn: &mut Conn, request: &Request) -> std::io::Result<After> {
    let c = &state.config;
    let chat = match read_chat(&request.body) {
        Ok(chat) => chat,
        Err(e) => {
            let (status, body) = wire::bad_json(c.flavor, &e);
            return json_reply(conn, c.flavor, status, &body).await;
        }
    };
    let prompt = prompt_tokens(&chat.prompt);
    count_prompt(state, &chat.prompt, |p| p.calls += 1);
    let Some(_slot) = take_slot(state).await else { return Ok(After::KeepAlive) };
    if let Some(body) = wire::overflow(c.flavor, prompt, chat.max_tokens, c.n_ctx) {
        state.overflows.fetch_add(1, SeqCst);
        return json_reply(conn, c.flavor, 400, &body).await;
    }
    // The reply stops at max_tokens, at the reply's end, or where the window is full.
    let room = c.n_ctx.saturating_sub(prompt + 1);
    let cap = chat.max_tokens.unwrap_or(u64::MAX).min(room);
    let n = c.reply_tokens.min(cap);
    let finish = if n < c.reply_tokens { "length" } else { "stop" };
    let pieces = reply_pieces(&chat.prompt, &chat.last_message, n);
    let id = format!("chatcmpl-{:032x}", state.ids.fetch_add(1, SeqCst) + 1);
    let reply = Reply { flavor: c.flavor, id: &id, created: 1_763_632_800, model: &chat.model };
    let counts = Counts { prompt, completion: pieces.len() as u64 };
    let kv = Kv::take(state, prompt);
    let written = if chat.stream {
        stream_reply(state, conn, &reply, &pieces, kv, (finish, counts, chat.include_usage)).await?
    } else {
        whole_reply(state, conn, &reply, &pieces, kv, finish, counts).await?
    };
    if written {
        state.completions.fetch_add(1, SeqCst);
        count_prompt(state, &chat.prompt, |p| p.completions += 1);
    }
    match (chat.stream, c.close_after_stream) {
        (true, Some(linger)) => Ok(After::Close(linger)),
        _ => Ok(After::KeepAlive),
    }
}

fn count_prompt(state: &State, prompt: &str, update: impl FnOnce(&mut PromptCount)) {
    let mut prompts = state.prompts.lock().unwrap_or_else(|p| p.into_inner());
    update(prompts.entry(prompt.to_string()).or_default());
}

/// A reply's tokens in a unified KV pool (nothing when the pool is not unified).
struct Kv<'a> {
    state: &'a State,
    held: u64,
}

impl<'a> Kv<'a> {
    fn take(state: &'a State, prompt: u64) -> Kv<'a> {
        let mut kv = Kv { state, held: 0 };
        kv.grow(prompt);
        kv
    }

    /// Hold `n` more tokens; false when the pool is full (llama.cpp then fails the reply).
    fn grow(&mut self, n: u64) -> bool {
        if !self.state.config.unified_kv {
            return true;
        }
        let mut used = self.state.kv_used.lock().unwrap_or_else(|p| p.into_inner());
        *used += n;
        self.held += n;
        *used <= self.state.config.n_ctx
    }
}

impl Drop for Kv<'_> {
    fn drop(&mut self) {
        let mut used = self.state.kv_used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.held);
    }
}

/// Write a streamed reply; false when the KV pool ran out (the stream then ends with the
/// error event, without `[DONE]`).
async fn stream_reply(
    state: &State,
    conn: &mut Conn,
    reply: &Reply<'_>,
    pieces: &[String],
    mut kv: Kv<'_>,
    (finish, counts, include_usage): (&str, Counts, bool),
) -> std::io::Result<bool> {
    let delay = state.config.token_delay;
    conn.write_chunked_head(200, &sse_headers(reply.flavor)).await?;
    conn.write_chunk(reply.role_frame().as_bytes()).await?;
    for piece in pieces {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !kv.grow(1) {
            state.overflows.fetch_add(1, SeqCst);
            conn.write_chunk(format!("data: {}\n\n", wire::LLAMA_KV_FULL).as_bytes()).await?;
            conn.end_chunked().await?;
            return Ok(false);
        }
        conn.write_chunk(reply.delta_frame(piece).as_bytes()).await?;
    }
    for frame in reply.end_frames(finish, counts, include_usage) {
        conn.write_chunk(frame.as_bytes()).await?;
    }
    conn.end_chunked().await?;
    Ok(true)
}

async fn whole_reply(
    state: &State,
    conn: &mut Conn,
    reply: &Reply<'_>,
    pieces: &[String],
    mut kv: Kv<'_>,
    finish: &str,
    counts: Counts,
) -> std::io::Result<bool> {
    let delay = state.config.token_delay;
    for _ in pieces {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !kv.grow(1) {
            state.overflows.fetch_add(1, SeqCst);
            json_reply(conn, reply.flavor, 500, wire::LLAMA_KV_FULL).await?;
            return Ok(false);
        }
    }
    let body = reply.whole(&pieces.concat(), finish, counts);
    json_reply(conn, reply.flavor, 200, &body).await?;
    Ok(true)
}

#[cfg(test)]
mod tests;

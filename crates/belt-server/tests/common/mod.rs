//! A test server: the cascade on the simulated provider behind belt-server, on a free port.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use belt_core::store::RunStore;
use belt_server::{RunSpec, Server, ServerConfig};
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-0123456789";

/// belt-app as `belt serve` has it with no key set and no belt.toml: the simulated provider.
pub fn app() -> Arc<belt_app::App> {
    Arc::new(belt_app::App::new(belt_app::Config::default()).with_env(Arc::new(|_| None)))
}

/// The defaults of a test server: the simulated model, at `latency_ms` per call unless a
/// request sets `sim_latency_ms`.
pub fn defaults(latency_ms: u64) -> RunSpec {
    RunSpec {
        model: Some("simulated/default".into()),
        sim_latency_ms: Some(latency_ms),
        ..RunSpec::default()
    }
}

pub struct TestServer {
    pub base: String,
    pub store: Arc<dyn RunStore>,
    pub manager: Arc<belt_server::RunManager>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Result<(), belt_server::ServerError>>>,
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new(TOKEN);
    c.heartbeat = Duration::from_millis(100);
    // The tests' webhook receivers listen on loopback.
    c.webhook_private_targets = true;
    c
}

impl TestServer {
    pub async fn start(config: ServerConfig, latency_ms: u64) -> Self {
        Self::with_store(config, latency_ms, Arc::new(belt_core::MemoryStore::new())).await
    }

    pub async fn with_store(config: ServerConfig, latency_ms: u64, store: Arc<dyn RunStore>) -> Self {
        Self::with_setup(config, latency_ms, store, |_| {}).await
    }

    /// A server that `setup` gets to change before it serves (to register orchestrators).
    pub async fn with_setup(
        config: ServerConfig,
        latency_ms: u64,
        store: Arc<dyn RunStore>,
        setup: impl FnOnce(&Server),
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = config;
        config.defaults = defaults(latency_ms);
        let server = Server::new(config, app(), store.clone());
        setup(&server);
        let manager = server.manager().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let join = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer { base, store, manager, stop: Some(tx), join: Some(join) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signal shutdown and wait for `serve` to return.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .expect("the server stops within 20 s")
                .unwrap()
                .unwrap();
        }
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn authed(b: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    b.header("authorization", format!("Bearer {TOKEN}"))
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    /// The `event:` line: the event's type.
    pub event: Option<String>,
    pub data: serde_json::Value,
}

/// Reads an SSE response event by event; comments are counted.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub comments: Vec<String>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader { stream: Box::pin(response.bytes_stream()), buf: String::new(), comments: Vec::new() }
    }

    /// The next event, or None at the end of the stream.
    pub async fn next(&mut self) -> Option<Sse> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        self.comments.push(c.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(Sse { id, event, data });
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(_) => return None,
                Err(_) => panic!("no SSE data for 30 s"),
            }
        }
    }
}

/// Poll `GET /v1/runs/{id}` until it has a result.
pub async fn wait_result(server: &TestServer, run_id: &str) -> serde_json::Value {
    let client = client();
    for _ in 0..600 {
        let v: serde_json::Value = authed(client.get(server.url(&format!("/v1/runs/{run_id}"))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !v["result"].is_null() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not finish in 30 s");
}

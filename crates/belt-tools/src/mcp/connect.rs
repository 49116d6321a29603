//! One live connection to an MCP server: a child process speaking MCP on its stdin/stdout,
//! or a Streamable HTTP endpoint, with rmcp's `initialize` done.
//!
//! The child is spawned here rather than by rmcp's `TokioChildProcess` so that its exit
//! status, the end of its stderr and the start of its stdout can go into error messages
//! ("exited (status 1): ModuleNotFoundError…", "wrote `Listening on…` to stdout, which is
//! not MCP"). It runs in a process group of its own, so that stopping it also stops what it
//! started (`npx` runs `node`, `uvx` runs `python`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use tokio::io::{AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::sync::{oneshot, watch};

use super::McpError;
use super::spec::{Endpoint, McpServerSpec, redact_url};

pub(crate) type Service = RunningService<RoleClient, ClientConfig>;

/// The largest message accepted from a server (a line on stdio, an event or body over
/// HTTP): a tool's result is capped far below this anyway, and a runaway server must not
/// make us buffer without bound.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How much of a child's stderr is kept (its end), for error messages.
const STDERR_KEPT: usize = 4 * 1024;
/// How much of the start of a child's stdout is kept, to recognise a program that is not
/// an MCP server.
const STDOUT_HEAD: usize = 1024;
/// What a stdio server inherits from belt's environment (as the official SDKs do): enough to
/// find programs and a home directory, not belt's API keys.
const INHERITED_ENV: &[&str] = &["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TMPDIR"];

/// A started server: rmcp's service, and the child process behind it (stdio only).
pub(crate) struct Connection {
    pub service: Service,
    pub child: Option<Child>,
}

impl Connection {
    /// Whether calls can still be sent: the transport is open and the process runs.
    pub fn alive(&self) -> bool {
        !self.service.is_closed()
            && !self.service.peer().is_transport_closed()
            && self.child.as_ref().is_none_or(|c| c.exit_status().is_none())
    }

    /// Close the transport (a stdio server sees its stdin end, an HTTP session is
    /// deleted), give the process a moment to exit, then stop it.
    pub async fn shutdown(mut self) {
        let _ = self.service.close_with_timeout(Duration::from_secs(2)).await;
        if let Some(child) = self.child.take() {
            child.stop(Duration::from_secs(2)).await;
        }
    }

    /// Why the connection ended, for a message: the exit status and the end of stderr, or
    /// only that the connection closed.
    pub async fn death(&self) -> String {
        match &self.child {
            Some(child) => {
                // The end of stdout may be seen a moment before the process is reaped.
                let status = child.wait_exit(Duration::from_millis(500)).await;
                let status = status
                    .map_or("its connection closed".to_string(), |s| format!("exited ({})", describe(s)));
                format!("{status}{}", child.output())
            }
            None => "closed the connection".into(),
        }
    }
}

/// Spawn or connect, then `initialize`; no time limit here (the caller has one).
pub(crate) async fn connect(
    server: &str,
    spec: &McpServerSpec,
    child: &mut Option<Child>,
) -> Result<Service, McpError> {
    match spec.check(server)? {
        Endpoint::Stdio { command } => {
            let (spawned, transport) = spawn(server, command, spec)?;
            *child = Some(spawned);
            match client_info().serve(transport).await {
                Ok(service) => Ok(service),
                Err(e) => Err(stdio_error(server, e, child.as_ref()).await),
            }
        }
        Endpoint::Http { url } => {
            let transport = http_transport(server, url, spec)?;
            client_info().serve(transport).await.map_err(|e| http_error(server, url, &e))
        }
    }
}

/// belt as an MCP client. Offered revision: the newest with an `initialize` handshake; a
/// server answering with an older one (2025-06-18, 2025-03-26, 2024-11-05) is accepted, as
/// rmcp goes on in the revision the server chose.
fn client_info() -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("belt", env!("CARGO_PKG_VERSION")))
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
}

type ChildTransport =
    AsyncRwTransport<RoleClient, Peek<tokio::process::ChildStdout>, tokio::process::ChildStdin>;

fn spawn(server: &str, command: &str, spec: &McpServerSpec) -> Result<(Child, ChildTransport), McpError> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(&spec.args).env_clear();
    for key in INHERITED_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut process = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => McpError::CommandNotFound {
            server: server.into(),
            command: command.into(),
            path: spec.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default(),
        },
        _ => McpError::Spawn { server: server.into(), command: command.into(), source },
    })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (process.stdin.take(), process.stdout.take(), process.stderr.take())
    else {
        return Err(McpError::Spawn {
            server: server.into(),
            command: command.into(),
            source: io::Error::other("its stdin, stdout or stderr was not piped"),
        });
    };
    let stderr_tail = Arc::new(Mutex::new(Tail::default()));
    let (done, stderr_done) = watch::channel(false);
    let keep = keep_stderr(server.to_string(), stderr, stderr_tail.clone());
    tokio::spawn(async move {
        keep.await;
        let _ = done.send(true);
    });
    let head = Arc::new(Mutex::new(Vec::new()));
    let peek = Peek { inner: stdout, head: head.clone() };
    let transport = AsyncRwTransport::new(peek, stdin).with_max_line_length(MAX_MESSAGE);
    Ok((Child::watch(process, stderr_tail, stderr_done, head), transport))
}

fn http_transport(
    server: &str,
    url: &str,
    spec: &McpServerSpec,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, McpError> {
    let invalid = |reason: String| McpError::InvalidSpec { server: server.into(), reason };
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &spec.headers {
        // The value is never quoted: it is usually a token.
        let name = reqwest::header::HeaderName::try_from(name.as_str())
            .map_err(|_| invalid(format!("`{name}` is not a valid HTTP header name")))?;
        let mut value = reqwest::header::HeaderValue::try_from(value.as_str()).map_err(|_| {
            invalid(format!("the value of the header `{name}` is not a valid HTTP header value"))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race: either provider is the same ring one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = reqwest::Client::builder()
        .connect_timeout(spec.startup_limit())
        .build()
        .map_err(|e| invalid(format!("could not set up an HTTP client: {e}")))?;
    let config = StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(headers)
        .max_sse_event_size(MAX_MESSAGE);
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

async fn stdio_error(server: &str, e: ClientInitializeError, child: Option<&Child>) -> McpError {
    // A process that exits at once breaks the pipe before it is reaped: wait for its status.
    let status = match child {
        Some(child) => child.wait_exit(Duration::from_secs(1)).await,
        None => None,
    };
    let output = child.map(Child::output).unwrap_or_default();
    match (&e, status) {
        (_, Some(status)) => McpError::Exited { server: server.into(), status: describe(status), output },
        (ClientInitializeError::ConnectionClosed(_), None) => McpError::NotMcp {
            server: server.into(),
            detail: format!("it closed its stdout without answering `initialize`{output}"),
        },
        _ => McpError::NotMcp {
            server: server.into(),
            detail: format!("`initialize` failed: {}{output}", init_detail(&e)),
        },
    }
}

fn http_error(server: &str, url: &str, e: &ClientInitializeError) -> McpError {
    // rmcp's wrappers name their Rust types; the HTTP client's own error says it better.
    // (rmcp does not give its transport error as the `source` of the initialize error.)
    let transport: &(dyn std::error::Error + 'static) = match e {
        ClientInitializeError::TransportError { error, .. } => error.error.as_ref(),
        other => other,
    };
    let http = sources(transport).find_map(|s| s.downcast_ref::<StreamableHttpError<reqwest::Error>>());
    let (detail, refused) = match http {
        Some(StreamableHttpError::Client(client)) => (chain(client), client.is_connect()),
        Some(other) => (chain(other), false),
        None => (init_detail(e), false),
    };
    // The client's messages quote the URL, query (a token, maybe) and all.
    let shown = redact_url(url);
    let detail = detail.replace(url, &shown);
    let (server, url) = (server.to_string(), shown);
    match (refused, http.is_some()) {
        (true, _) => McpError::Unreachable {
            server,
            url,
            detail: format!(
                "nothing answers there ({detail}); is the server running, and is the address right?"
            ),
        },
        (false, true) => McpError::Unreachable {
            server,
            url,
            detail: format!("{detail}; is it an MCP Streamable HTTP endpoint (often ending in /mcp)?"),
        },
        (false, false) => {
            McpError::NotMcp { server, detail: format!("`initialize` at {url} failed: {detail}") }
        }
    }
}

/// What went wrong in `initialize`, without the Rust type names rmcp's wrappers print.
fn init_detail(e: &ClientInitializeError) -> String {
    match e {
        ClientInitializeError::TransportError { error, context } => {
            format!("{} ({context})", chain(error.error.as_ref()))
        }
        other => chain(other),
    }
}

fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error and its causes, one after the other, without the repeats of wrappers that
/// print their cause.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for s in sources(e) {
        let text = s.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// A stdio server's process, reaped by a task of its own that also stops it on request
/// (or when this handle is dropped).
pub(crate) struct Child {
    pid: Option<u32>,
    exit: watch::Receiver<Option<ExitStatus>>,
    stop: Option<oneshot::Sender<()>>,
    stderr: Arc<Mutex<Tail>>,
    /// Whether its stderr was read to the end.
    stderr_done: watch::Receiver<bool>,
    stdout_head: Arc<Mutex<Vec<u8>>>,
}

impl Child {
    fn watch(
        mut process: tokio::process::Child,
        stderr: Arc<Mutex<Tail>>,
        stderr_done: watch::Receiver<bool>,
        stdout_head: Arc<Mutex<Vec<u8>>>,
    ) -> Child {
        let pid = process.id();
        let (exit_tx, exit) = watch::channel(None);
        let (stop, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = process.wait() => status,
                // Asked to stop, or the handle was dropped.
                _ = stop_rx => {
                    signal_group(pid, libc::SIGKILL);
                    let _ = process.start_kill();
                    process.wait().await
                }
            };
            // Whatever it started goes too.
            signal_group(pid, libc::SIGKILL);
            if let Ok(status) = status {
                let _ = exit_tx.send(Some(status));
            }
        });
        Child { pid, exit, stop: Some(stop), stderr, stderr_done, stdout_head }
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Its exit status, waiting at most `limit` for it (and, once it exited, a moment for
    /// the last of its stderr).
    async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await;
        let status = self.exit_status();
        if status.is_some() {
            let mut done = self.stderr_done.clone();
            let _ = tokio::time::timeout(Duration::from_millis(500), done.wait_for(|d| *d)).await;
        }
        status
    }

    /// Wait `grace` for it to exit by itself (its stdin is closed), ask it to stop
    /// (SIGTERM), wait a second, kill it.
    async fn stop(mut self, grace: Duration) {
        if self.wait_exit(grace).await.is_some() {
            return;
        }
        signal_group(self.pid, libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(1)).await.is_none() {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            self.wait_exit(Duration::from_secs(2)).await;
        }
    }

    /// For a message: what it wrote to stdout that is not MCP, and the end of its stderr.
    pub fn output(&self) -> String {
        let mut out = String::new();
        let head =
            self.stdout_head.lock().map(|h| String::from_utf8_lossy(&h).into_owned()).unwrap_or_default();
        if let Some(line) = head.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('{')) {
            out.push_str(&format!(
                "; it wrote `{}` to stdout, which is not MCP (one JSON-RPC message per line): is it an MCP \
                 server for stdio, and does it log to stderr?",
                clip(line, 200)
            ));
        }
        let tail = self.stderr.lock().map(|t| t.last_lines(8)).unwrap_or_default();
        if !tail.is_empty() {
            out.push_str(&format!("; its stderr ends with:\n{tail}"));
        }
        out
    }
}

/// Dropped (a failed start, the last tool of a server gone): the group is killed right
/// away, not by the reaping task, which a runtime shutting down may never run again.
impl Drop for Child {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            signal_group(self.pid, libc::SIGKILL);
        }
    }
}

fn signal_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (spawned with process_group(0)); it touches no memory of ours.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Reads a child's stderr to its end (so the child never blocks on a full pipe), keeping
/// its last bytes for error messages and passing the lines to `tracing`.
async fn keep_stderr(server: String, stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Tail>>) {
    let mut lines = tokio::io::BufReader::new(stderr).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let line = String::from_utf8_lossy(&line);
        tracing::debug!(server = %server, "MCP server stderr: {}", clip(&line, 1000));
        if let Ok(mut tail) = tail.lock() {
            tail.push(&line);
        }
    }
}

/// The last [`STDERR_KEPT`] bytes of a stream, as lines.
#[derive(Default)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line = clip(line, STDERR_KEPT).to_string();
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.bytes > STDERR_KEPT {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn last_lines(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

pub(crate) use belt_core::words::cut as clip;

/// A child's stdout, keeping a copy of its first [`STDOUT_HEAD`] bytes.
pub(crate) struct Peek<R> {
    inner: R,
    head: Arc<Mutex<Vec<u8>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Peek<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll
            && let Ok(mut head) = self.head.lock()
        {
            let room = STDOUT_HEAD.saturating_sub(head.len());
            let new = &buf.filled()[before..];
            head.extend_from_slice(&new[..new.len().min(room)]);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_is_bounded() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(&format!("line {i}"));
        }
        assert!(tail.bytes <= STDERR_KEPT);
        assert_eq!(tail.last_lines(2), "line 9998\nline 9999");
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}

//! `belt serve` as a test drives it: started in a directory with a clean environment,
//! waited for until it answers, killed when the test ends (passed or failed), and a minimal
//! HTTP/1.1 client for tests without an async runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `belt serve`; killed (SIGKILL) and reaped when dropped, so a failed test never
/// leaves a server behind.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, once [`Served::wait_listening`] has seen it.
    pub base: String,
    pub home: PathBuf,
    pub stderr: mpsc::Receiver<String>,
    /// Remove `home` on drop (a directory this helper made), except after a failure.
    owns_home: bool,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_home && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

/// `belt serve EXTRA` in a fresh directory of its own named after `name`, its store
/// `HOME/belt.db`; `token` as `BELT_API_TOKEN` if given.
pub fn start(name: &str, extra: &[&str], token: Option<&str>) -> Served {
    start_with_env(name, extra, token, &[])
}

/// [`start`] with extra environment.
pub fn start_with_env(name: &str, extra: &[&str], token: Option<&str>, env: &[(&str, &Path)]) -> Served {
    let home = std::env::temp_dir().join(format!("belt-serve-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("create the server's home");
    let store = format!("sqlite://{}/belt.db", home.display());
    let mut args = vec!["--store", store.as_str(), "serve"];
    args.extend(extra);
    let mut s = start_in(&home, &home, &args, token, env);
    s.owns_home = true;
    s
}

/// `belt ARGS` (a `serve` command) in `cwd` with its runs under `home` (`BELT_HOME`), extra
/// environment `env`; the directories stay when the server ends.
pub fn start_in(
    cwd: &Path,
    home: &Path,
    args: &[&str],
    token: Option<&str>,
    env: &[(&str, &Path)],
) -> Served {
    let mut cmd = super::belt_command(cwd, home, args);
    cmd.stdout(Stdio::null());
    if let Some(t) = token {
        cmd.env("BELT_API_TOKEN", t);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start belt serve");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Served { child, base: String::new(), home: home.to_path_buf(), stderr: rx, owns_home: false }
}

impl Served {
    /// Wait (at most 30 s) for the "serving on" line; the lines seen up to it and the one
    /// after (the token's).
    pub fn wait_listening(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            lines.push(line.clone());
            if let Some(rest) = line.strip_prefix("belt: serving on ") {
                self.base = rest.split_whitespace().next().expect("an address").to_string();
                if let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(10)) {
                    lines.push(l);
                }
                return lines;
            }
        }
        panic!("belt serve did not start: {lines:?}");
    }

    /// Wait until `GET /healthz` answers 200, polling (at most 30 s).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http(&self.base, "GET", "/healthz", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("belt serve at {} did not answer /healthz within 30 s", self.base);
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to `base` (`http://HOST:PORT`) with a bearer `token` and a JSON
/// `body`; the status and the body of the answer. Every read and write is bounded (10 s).
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_with(base, method, path, token, body, &[])
}

/// [`http`] with extra request headers.
pub fn http_with(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let host = base.strip_prefix("http://").unwrap_or(base);
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// A chunked body's data: each `SIZE\r\nDATA\r\n` until the size-0 chunk.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        let (Some(data), Some(after)) = (rest.get(..n), rest.get(n..)) else { break };
        if n == 0 {
            break;
        }
        out.push_str(data);
        body = after.trim_start_matches("\r\n");
    }
    out
}

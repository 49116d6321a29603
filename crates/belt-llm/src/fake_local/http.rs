//! Just enough HTTP/1.1 for the fake local servers, written by hand so that the bytes on
//! the wire and the connection's life are the test's to choose: `Content-Length` and
//! chunked bodies, keep-alive, and a connection closed after a streamed reply although its
//! headers promised `Keep-Alive: timeout=5` (what llama-server's cpp-httplib does).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head read (a real client sends well under 8 KiB).
const MAX_HEAD: usize = 64 << 10;
/// The largest request body read.
const MAX_BODY: usize = 32 << 20;

/// A request as read from the socket.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The client asked for the connection to close after this exchange.
    pub fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One connection's read side: bytes read past the previous request stay here.
pub(crate) struct Conn {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the connection between requests (the normal end).
    Closed,
    /// A malformed or oversized request, or a broken socket: the connection is dropped.
    Bad,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn { stream, buffer: Vec::new() }
    }

    /// The next request on this connection.
    pub async fn read_request(&mut self) -> Result<Request, ReadError> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(ReadError::Bad);
            }
            if self.fill().await? == 0 {
                return Err(if self.buffer.is_empty() { ReadError::Closed } else { ReadError::Bad });
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let target = first.next().unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut request = Request { method, path, headers, body: Vec::new() };
        if request.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            request.body = self.read_chunked().await?;
        } else {
            let length: usize = request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if length > MAX_BODY {
                return Err(ReadError::Bad);
            }
            while self.buffer.len() < length {
                if self.fill().await? == 0 {
                    return Err(ReadError::Bad);
                }
            }
            request.body = self.buffer.drain(..length).collect();
        }
        Ok(request)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buffer, b"\r\n") {
                    break at;
                }
                if self.fill().await? == 0 {
                    return Err(ReadError::Bad);
                }
            };
            let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Bad)?;
            self.buffer.drain(..line_end + 2);
            if body.len() + size > MAX_BODY {
                return Err(ReadError::Bad);
            }
            while self.buffer.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(ReadError::Bad);
                }
            }
            body.extend(self.buffer.drain(..size));
            self.buffer.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    async fn fill(&mut self) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk).await.map_err(|_| ReadError::Bad)?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// A whole response with a `Content-Length` body.
    pub async fn write_whole(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut out = head(status, headers);
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    /// The head of a chunked response.
    pub async fn write_chunked_head(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> std::io::Result<()> {
        let mut out = head(status, headers);
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        self.stream.write_all(out.as_bytes()).await?;
        self.stream.flush().await
    }

    /// One chunk of a chunked body (empty data is skipped: it would end the body).
    pub async fn write_chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = format!("{:X}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// The end of a chunked body.
    pub async fn end_chunked(&mut self) -> std::io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n").await?;
        self.stream.flush().await
    }

    /// Close the connection the way a server that has decided to close does: whatever
    /// the client sends within `linger` is read and left unanswered (so a request sent on
    /// this connection meanwhile fails with no response byte), then the socket is shut.
    /// True when a request (some bytes) arrived and was dropped so.
    pub async fn close_after(mut self, linger: Duration) -> bool {
        let mut dropped = false;
        if !linger.is_zero() {
            let mut sink = [0u8; 16 << 10];
            let deadline = tokio::time::Instant::now() + linger;
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.stream.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
                dropped = true;
            }
        }
        let _ = self.stream.shutdown().await;
        dropped
    }
}

fn head(status: u16, headers: &[(&str, String)]) -> String {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

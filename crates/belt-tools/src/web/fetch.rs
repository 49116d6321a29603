//! `fetch_url`: one web page, read as text, under [`FetchPolicy`]: http and https only,
//! public addresses only (checked where the connection goes, at every hop), redirects
//! followed by hand with the same checks, the body and the text capped, the whole fetch
//! bounded in time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use belt_core::tools::{Source, Tool, ToolOutput};
use futures::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use serde::Deserialize;

use super::{USER_AGENT, WebError, blocked_reason, error_chain, install_crypto_provider, read_body, seconds};

/// What `fetch_url` may read, and how much. The default refuses every address that is not
/// public and reads at most 2 MiB in 20 s, keeping 20 000 characters of text.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPolicy {
    /// Read private, loopback and other non-public addresses too (an intranet's docs).
    pub allow_private: bool,
    /// Host names (or IP literals) read whatever their addresses: one internal server.
    pub allow_hosts: Vec<String>,
    /// Redirects followed, each checked as the first URL was.
    pub max_redirects: usize,
    /// Bytes of a body read; the rest is never downloaded.
    pub max_body_bytes: usize,
    /// Characters of text handed to the model.
    pub max_text_chars: usize,
    /// The whole fetch, redirects included.
    pub timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            allow_hosts: Vec::new(),
            max_redirects: 5,
            max_body_bytes: 2 << 20,
            max_text_chars: 20_000,
            timeout: Duration::from_secs(20),
        }
    }
}

impl FetchPolicy {
    fn exempt(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_private || self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `host`, at `ip`, may be read.
    fn check(&self, host: &str, ip: IpAddr) -> Result<(), WebError> {
        match blocked_reason(ip) {
            Some(kind) if !self.exempt(host) => Err(WebError::Refused { host: host.to_string(), ip, kind }),
            _ => Ok(()),
        }
    }
}

/// Turns a host name into its addresses: the system's resolver unless a test (or an
/// application with its own DNS) gives another.
pub type HostResolver = Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

fn system_resolver() -> HostResolver {
    Arc::new(|host: String| {
        Box::pin(
            async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) },
        )
    })
}

/// The client's DNS resolver: it hands the client only addresses the policy allows, so the
/// address checked is the address connected to.
struct GuardedResolver {
    policy: Arc<FetchPolicy>,
    resolve: HostResolver,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy.clone();
        let lookup = (self.resolve)(host.clone());
        Box::pin(async move {
            let boxed = |e: WebError| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) };
            let ips = lookup
                .await
                .map_err(|e| boxed(WebError::Resolve { host: host.clone(), message: e.to_string() }))?;
            if ips.is_empty() {
                return Err(boxed(WebError::Resolve { host, message: "no addresses".into() }));
            }
            // One refused address refuses the name: a name with both a public and a
            // private address is a rebinding attempt as likely as a mistake.
            for ip in &ips {
                policy.check(&host, *ip).map_err(boxed)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A page as read: its final URL (after redirects), title and text.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedPage {
    pub url: String,
    /// The HTML `<title>`, or empty.
    pub title: String,
    pub content_type: String,
    pub text: String,
    /// The body was longer than [`FetchPolicy::max_body_bytes`]; only its start was read.
    pub body_cut: bool,
    /// The text's length in characters when it was cut to [`FetchPolicy::max_text_chars`].
    pub text_cut_from: Option<usize>,
}

impl FetchedPage {
    /// The page as the model reads it: title, URL, notes on what was cut, then the text.
    pub fn render(&self, max_body_bytes: usize, max_text_chars: usize) -> String {
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&format!("Title: {}\n", self.title));
        }
        out.push_str(&format!("URL: {}\n", self.url));
        if self.body_cut {
            out.push_str(&format!(
                "[the page is longer than {max_body_bytes} bytes; only its start was read]\n"
            ));
        }
        if let Some(total) = self.text_cut_from {
            out.push_str(&format!("[text cut at {max_text_chars} of {total} characters]\n"));
        }
        out.push('\n');
        out.push_str(&self.text);
        out
    }

    pub fn source(&self) -> Source {
        Source { url: self.url.clone(), title: self.title.clone() }
    }
}

/// Reads pages under a [`FetchPolicy`]. Cheap to clone (one shared HTTP client).
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, WebError> {
        Fetcher::with_resolver(policy, system_resolver())
    }

    /// A fetcher whose host names are resolved by `resolve` (the policy still judges the
    /// addresses it returns).
    pub fn with_resolver(policy: FetchPolicy, resolve: HostResolver) -> Result<Fetcher, WebError> {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the resolver's checks.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone(), resolve }))
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| WebError::Client(error_chain(&e)))?;
        Ok(Fetcher { client, policy })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Read `url` (following up to [`FetchPolicy::max_redirects`] redirects) as text.
    pub async fn fetch(&self, url: &str) -> Result<FetchedPage, WebError> {
        let limit = self.policy.timeout;
        tokio::time::timeout(limit, self.fetch_unbounded(url))
            .await
            .unwrap_or_else(|_| Err(WebError::Timeout { url: url.to_string(), secs: seconds(limit) }))
    }

    async fn fetch_unbounded(&self, url: &str) -> Result<FetchedPage, WebError> {
        let mut url =
            Url::parse(url).map_err(|e| WebError::BadUrl { url: url.to_string(), reason: e.to_string() })?;
        for _ in 0..=self.policy.max_redirects {
            let host = self.check_url(&url)?;
            let response = self
                .client
                .get(url.clone())
                .header(
                    ACCEPT,
                    "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,*/*;q=0.5",
                )
                .send()
                .await
                .map_err(|e| request_error(&url, &e))?;
            // The resolver already judged the address; the peer is checked once more in
            // case the connection went elsewhere (a pooled one, an IP literal).
            if let Some(peer) = response.remote_addr() {
                self.policy.check(&host, peer.ip())?;
            }
            let status = response.status();
            if status.is_redirection() {
                url = redirect_target(&url, &response)?;
                continue;
            }
            if !status.is_success() {
                return Err(WebError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    hint: String::new(),
                });
            }
            let content_type =
                response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let (body, body_cut) =
                read_body(response, self.policy.max_body_bytes).await.map_err(|e| request_error(&url, &e))?;
            return self.page(url, content_type, body, body_cut).await;
        }
        Err(WebError::TooManyRedirects { max: self.policy.max_redirects, url: url.to_string() })
    }

    /// The scheme, and the address when the host is an IP literal (names are judged by the
    /// resolver); the host, for messages and the peer check.
    fn check_url(&self, url: &Url) -> Result<String, WebError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebError::Scheme { url: url.to_string(), scheme: url.scheme().to_string() });
        }
        let Some(host) = url.host_str() else {
            return Err(WebError::BadUrl { url: url.to_string(), reason: "it has no host".into() });
        };
        // The URL parser writes every IPv4 form (0x7f.1, 2130706433) as dotted decimal, and
        // IPv6 in brackets.
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.policy.check(host, ip)?;
        }
        Ok(host.to_string())
    }

    async fn page(
        &self,
        url: Url,
        content_type: String,
        body: Vec<u8>,
        body_cut: bool,
    ) -> Result<FetchedPage, WebError> {
        let (title, text) = match kind_of(&content_type, &body) {
            Kind::Html => {
                let title = html_title(&body);
                // Parsing a large page takes a while: off the async runtime.
                let text = tokio::task::spawn_blocking(move || html_to_text(&body)).await.map_err(|_| {
                    WebError::NotText {
                        url: url.to_string(),
                        content_type: "HTML that could not be parsed".into(),
                    }
                })?;
                (title, text)
            }
            Kind::Text => (String::new(), String::from_utf8_lossy(&body).into_owned()),
            Kind::Binary => return Err(WebError::NotText { url: url.to_string(), content_type }),
        };
        let (text, text_cut_from) = cut_chars(text, self.policy.max_text_chars);
        Ok(FetchedPage { url: url.to_string(), title, content_type, text, body_cut, text_cut_from })
    }
}

fn request_error(url: &Url, e: &reqwest::Error) -> WebError {
    // The resolver's refusal travels inside reqwest's error: hand it back as it was.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if let Some(web) = cause.downcast_ref::<WebError>() {
            return match web {
                WebError::Refused { host, ip, kind } => {
                    WebError::Refused { host: host.clone(), ip: *ip, kind }
                }
                WebError::Resolve { host, message } => {
                    WebError::Resolve { host: host.clone(), message: message.clone() }
                }
                other => WebError::Request { url: url.to_string(), message: other.to_string() },
            };
        }
        source = cause.source();
    }
    if e.is_timeout() {
        return WebError::Timeout { url: url.to_string(), secs: 0.0 };
    }
    WebError::Request { url: url.to_string(), message: error_chain(e) }
}

fn redirect_target(from: &Url, response: &reqwest::Response) -> Result<Url, WebError> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|location| from.join(location).ok())
        .ok_or_else(|| WebError::BadRedirect { url: from.to_string() })
}

enum Kind {
    Html,
    Text,
    Binary,
}

/// What a body is, by its Content-Type, or by a look at it when there is none.
fn kind_of(content_type: &str, body: &[u8]) -> Kind {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/html" | "application/xhtml+xml" => Kind::Html,
        t if t.starts_with("text/") || t.ends_with("+json") || t.ends_with("+xml") => Kind::Text,
        "application/json" | "application/xml" | "application/javascript" => Kind::Text,
        "" | "application/octet-stream" => {
            let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
            if head.trim_start().starts_with('<')
                && (head.contains("<html") || head.contains("<!doctype html"))
            {
                Kind::Html
            } else if std::str::from_utf8(&body[..body.len().min(4096)]).is_ok()
                || body.len() > 4096 && head.is_ascii()
            {
                Kind::Text
            } else {
                Kind::Binary
            }
        }
        _ => Kind::Binary,
    }
}

/// Nesting past which a page is not given to the HTML parser: html5ever's time grows with
/// the square of the depth of block elements (50 000 nested `<div>`s take minutes), and real
/// pages stay far below.
const MAX_NESTING: usize = 256;

/// The page's text, links as numbered footnotes, wrapped at 100 columns; a page nested too
/// deep to parse in good time only loses its tags.
fn html_to_text(body: &[u8]) -> String {
    if nesting(body) > MAX_NESTING {
        return strip_tags(&String::from_utf8_lossy(body));
    }
    html2text::config::plain()
        .string_from_read(body, 100)
        .unwrap_or_else(|_| strip_tags(&String::from_utf8_lossy(body)))
}

/// Elements that have no end tag, or whose end tag pages often leave out: not counted.
const UNCOUNTED: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
    "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "html", "head", "body",
];

/// The deepest nesting of elements in `html`, roughly (start tags minus end tags), in one pass.
fn nesting(html: &[u8]) -> usize {
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    let find = |from: usize, needle: &[u8]| {
        html[from..].windows(needle.len()).position(|w| w == needle).map(|p| from + p)
    };
    while let Some(at) = html[i..].iter().position(|&b| b == b'<').map(|p| i + p) {
        let rest = &html[at + 1..];
        let name_len = rest.iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        let end = find(at, b">").unwrap_or(html.len());
        if rest.starts_with(b"!--") {
            i = find(at, b"-->").map_or(html.len(), |e| e + 3);
            continue;
        }
        if rest.first() == Some(&b'/') {
            depth = depth.saturating_sub(1);
        } else if name_len > 0 {
            let name = String::from_utf8_lossy(&rest[..name_len]).to_ascii_lowercase();
            let self_closing = end > 0 && html.get(end - 1) == Some(&b'/');
            if matches!(name.as_str(), "script" | "style") {
                i = find(end.min(html.len()), format!("</{name}").as_bytes()).unwrap_or(html.len());
                continue;
            }
            if !self_closing && !UNCOUNTED.contains(&name.as_str()) {
                depth += 1;
                deepest = deepest.max(depth);
            }
        }
        i = (end + 1).min(html.len());
    }
    deepest
}

/// Text without tags, the contents of scripts and styles dropped, blank runs collapsed.
fn strip_tags(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while let Some(at) = lower[i..].find('<').map(|p| i + p) {
        text.push_str(&html[i..at]);
        text.push(' ');
        let raw = ["script", "style"].into_iter().find(|name| lower[at + 1..].starts_with(name));
        let from = match raw {
            // Their contents are not text; unclosed, they run to the end.
            Some(name) => match lower[at..].find(&format!("</{name}")) {
                Some(p) => at + p + 2,
                None => return collapse(&text),
            },
            None => at,
        };
        i = lower[from..].find('>').map_or(html.len(), |p| from + p + 1);
    }
    text.push_str(&html[i.min(html.len())..]);
    collapse(&text)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of the first `<title>` in the page's first 256 KiB, entities decoded, blanks
/// collapsed, at most 300 characters.
fn html_title(body: &[u8]) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(256 << 10)]).into_owned();
    let lower = head.to_ascii_lowercase();
    let Some(open) = lower.find("<title") else { return String::new() };
    let Some(start) = lower[open..].find('>').map(|i| open + i + 1) else { return String::new() };
    let Some(end) = lower[start..].find("</title").map(|i| start + i) else { return String::new() };
    let raw = &head[start..end];
    let decoded = html2text::config::plain().string_from_read(format!("<p>{raw}</p>").as_bytes(), 10_000);
    let text = decoded.unwrap_or_else(|_| raw.to_string());
    let title = text.split_whitespace().collect::<Vec<_>>().join(" ");
    title.chars().take(300).collect()
}

fn cut_chars(text: String, max: usize) -> (String, Option<usize>) {
    match text.char_indices().nth(max) {
        Some((at, _)) => {
            let total = text.chars().count();
            (text[..at].to_string(), Some(total))
        }
        None => (text, None),
    }
}

/// The `fetch_url` tool's arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    url: String,
}

/// The `fetch_url` tool: one page as text, with the page as its source. Idempotent (a GET).
pub fn fetch_url_tool(fetcher: Fetcher) -> Tool {
    let description = "Read one web page (http or https) as plain text, with its title. Long pages are cut; \
        links are listed as numbered footnotes.";
    let parameters = serde_json::json!({
        "type": "object",
        "properties": {"url": {"type": "string", "description": "The page's absolute URL."}},
        "required": ["url"],
        "additionalProperties": false
    });
    let timeout = fetcher.policy.timeout + Duration::from_secs(5);
    Tool::dynamic("fetch_url", description, parameters, move |arguments| {
        let fetcher = fetcher.clone();
        async move {
            let args: FetchArgs = serde_json::from_value(arguments).map_err(|e| {
                belt_core::EffectError::new(format!("the arguments do not match fetch_url's parameters: {e}"))
            })?;
            let page = fetcher.fetch(&args.url).await.map_err(WebError::into_effect)?;
            let policy = fetcher.policy();
            let text = page.render(policy.max_body_bytes, policy.max_text_chars);
            Ok(ToolOutput::new(text).with_sources(vec![page.source()]))
        }
    })
    .idempotent()
    .timeout(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_found_decoded_and_collapsed() {
        let html = b"<html><head><TITLE lang=en>\n  Caf&eacute; &amp; \n bar </title></head></html>";
        assert_eq!(html_title(html), "Caf\u{e9} & bar");
        assert_eq!(html_title(b"<p>no title</p>"), "");
    }

    #[test]
    fn kinds_follow_the_content_type_then_the_body() {
        assert!(matches!(kind_of("text/html; charset=utf-8", b""), Kind::Html));
        assert!(matches!(kind_of("application/ld+json", b"{}"), Kind::Text));
        assert!(matches!(kind_of("image/png", b"\x89PNG"), Kind::Binary));
        assert!(matches!(kind_of("", b"  <!DOCTYPE html><html>"), Kind::Html));
        assert!(matches!(kind_of("", b"\xff\xfe\x00\x01"), Kind::Binary));
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut_chars("h\u{e9}llo".into(), 2), ("h\u{e9}".into(), Some(5)));
        assert_eq!(cut_chars("abc".into(), 3), ("abc".into(), None));
    }

    #[test]
    fn deeply_nested_html_is_converted_without_crashing() {
        // 400 000 nested `<div>`s: hours in html5ever; here a linear fallback.
        let html = format!("{}deep{}", "<div>".repeat(400_000), "</div>".repeat(400_000));
        let started = std::time::Instant::now();
        let text = std::thread::Builder::new()
            .stack_size(2 << 20) // what spawn_blocking's threads get
            .spawn(move || html_to_text(html.as_bytes()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(text, "deep");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }

    #[test]
    fn nesting_counts_open_elements_but_not_void_or_optional_ones() {
        assert_eq!(nesting(b"<div><p>a<br><img src=x/><div>b</div></div><div/>"), 2);
        assert_eq!(
            nesting(b"<script>if (a<b) { '<div><div>' }</script><!-- <div><div> --><span>x</span>"),
            1
        );
        assert_eq!(
            strip_tags("<p>a <b>b</b></p><script>var x = '<p>';</script><style>p{}</style>c"),
            "a b c"
        );
    }
}

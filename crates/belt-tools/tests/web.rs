//! `web_search` and `fetch_url` against fake servers on 127.0.0.1: the three search wire
//! formats (request shape, key, answer), and fetching under the address policy. The fake
//! "public" site is on loopback too, so the tests that need it reach it by a name that an
//! injected resolver maps to 127.0.0.1 and that the policy lists in `allow_hosts`; every
//! other way to loopback (a literal, another name) stays refused, which is what they check.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use belt_core::Source;
use belt_tools::web::{
    FetchPolicy, Fetcher, HostResolver, SearchBackend, WebError, WebSearchConfig, fetch_url_tool,
    web_search_tool,
};
use serde_json::json;

/// What a fake server saw: each request's path and query, headers and body.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

impl Seen {
    fn record(&self, path: &str, query: Option<String>, headers: HeaderMap, body: Bytes) {
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        self.0.lock().unwrap().push((target, headers, String::from_utf8_lossy(&body).into_owned()));
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn first(&self) -> (String, HeaderMap, String) {
        self.0.lock().unwrap()[0].clone()
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A server answering `path` with `body` (as `content_type`) and recording requests.
async fn answering(
    method: &str,
    path: &'static str,
    content_type: &'static str,
    body: String,
) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let handler = move |RawQuery(q): RawQuery, headers: HeaderMap, bytes: Bytes| {
        let body = body.clone();
        async move {
            s.record(path, q, headers, bytes);
            ([(header::CONTENT_TYPE, content_type)], body)
        }
    };
    let route = if method == "POST" { post(handler) } else { get(handler) };
    (serve(Router::new().route(path, route)).await, seen)
}

fn query_pairs(target: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x{target}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn config(backend: SearchBackend, addr: SocketAddr, key: Option<&str>) -> WebSearchConfig {
    WebSearchConfig {
        url: Some(format!("http://{addr}/")),
        api_key: key.map(String::from),
        ..WebSearchConfig::new(backend)
    }
}

#[tokio::test]
async fn searxng_gets_a_json_query_and_its_results_become_a_numbered_list() {
    let answer = json!({"query": "rust", "results": [
        {"title": "Rust", "url": "https://www.rust-lang.org/", "content": "A language empowering everyone", "engine": "x"},
        {"title": "The Book", "url": "https://doc.rust-lang.org/book/", "content": ""},
        {"title": "no url"}
    ]});
    let (addr, seen) = answering("GET", "/search", "application/json", answer.to_string()).await;
    let tool = web_search_tool(config(SearchBackend::Searxng, addr, None)).unwrap();
    assert!(tool.policy().idempotent);
    let out = tool.call(json!({"query": "rust lang", "count": null})).await.unwrap();
    assert_eq!(
        out.content,
        "Results for \"rust lang\" (SearXNG):\n1. Rust\n   https://www.rust-lang.org/\n   A language empowering everyone\n\
         2. The Book\n   https://doc.rust-lang.org/book/\n"
    );
    assert_eq!(
        out.sources[1],
        Source { url: "https://doc.rust-lang.org/book/".into(), title: "The Book".into() }
    );
    let (target, _, _) = seen.first();
    assert!(target.starts_with("/search?"), "{target}");
    assert_eq!(query_pairs(&target), [("q".into(), "rust lang".into()), ("format".into(), "json".into())]);
}

#[tokio::test]
async fn brave_gets_its_token_header_and_count_and_snippets_lose_markup() {
    let answer = json!({"type": "search", "web": {"results": [
        {"title": "Tokio", "url": "https://tokio.rs/", "description": "An <strong>async</strong> runtime &amp; more"}
    ]}});
    let (addr, seen) = answering("GET", "/res/v1/web/search", "application/json", answer.to_string()).await;
    let tool = web_search_tool(config(SearchBackend::Brave, addr, Some("brave-key-1"))).unwrap();
    let out = tool.call(json!({"query": "tokio", "count": 3})).await.unwrap();
    assert!(
        out.content.ends_with("1. Tokio\n   https://tokio.rs/\n   An async runtime & more\n"),
        "{}",
        out.content
    );
    let (target, headers, _) = seen.first();
    assert_eq!(headers["x-subscription-token"], "brave-key-1");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(query_pairs(&target), [("q".into(), "tokio".into()), ("count".into(), "3".into())]);
}

#[tokio::test]
async fn tavily_gets_a_json_post_with_the_key() {
    let answer = json!({"query": "q", "answer": null, "results": [
        {"title": "Axum", "url": "https://docs.rs/axum", "content": "Web framework", "score": 0.9}
    ]});
    let (addr, seen) = answering("POST", "/search", "application/json", answer.to_string()).await;
    let tool = web_search_tool(config(SearchBackend::Tavily, addr, Some("tvly-key"))).unwrap();
    let out = tool.call(json!({"query": "axum", "count": 2})).await.unwrap();
    assert_eq!(out.sources, [Source { url: "https://docs.rs/axum".into(), title: "Axum".into() }]);
    let (_, headers, body) = seen.first();
    assert_eq!(headers["authorization"], "Bearer tvly-key");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"api_key": "tvly-key", "query": "axum", "max_results": 2, "search_depth": "basic"})
    );
}

#[tokio::test]
async fn a_refused_key_and_a_searxng_without_json_say_what_to_fix() {
    let refuse = |code: u16| move || async move { StatusCode::from_u16(code).unwrap() };
    let addr =
        serve(Router::new().route("/res/v1/web/search", get(refuse(401))).route("/search", get(refuse(403))))
            .await;
    let brave = web_search_tool(config(SearchBackend::Brave, addr, Some("bad"))).unwrap();
    let err = brave.call(json!({"query": "x", "count": null})).await.unwrap_err();
    assert!(
        err.message.contains("HTTP 401 (the Brave Search API key was refused") && !err.transient,
        "{}",
        err.message
    );
    let searxng = web_search_tool(config(SearchBackend::Searxng, addr, None)).unwrap();
    let err = searxng.call(json!({"query": "x", "count": null})).await.unwrap_err();
    assert!(err.message.contains("`json` is in `search.formats`"), "{}", err.message);
}

/// A resolver that knows only `names`, each at 127.0.0.1.
fn resolver(names: &'static [&'static str]) -> HostResolver {
    Arc::new(move |host: String| {
        Box::pin(async move {
            if names.contains(&host.as_str()) {
                Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
            } else if host == "mixed.test" {
                Ok(vec!["93.184.216.34".parse().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST)])
            } else {
                Err(std::io::Error::other(format!("unknown test host {host}")))
            }
        })
    })
}

/// A fetcher that reaches `public.test` (at 127.0.0.1) and nothing else private.
fn public_test_fetcher(policy: FetchPolicy) -> Fetcher {
    let policy = FetchPolicy { allow_hosts: vec!["public.test".into()], ..policy };
    Fetcher::with_resolver(policy, resolver(&["public.test", "internal.test", "rebind.test"])).unwrap()
}

const PAGE: &str = "<!doctype html><html><head><title>The  Test &amp; Page</title><script>var secret = 1;</script>\
    <style>p { color: red }</style></head><body><h1>Heading</h1><p>First paragraph with a \
    <a href=\"https://example.org/more\">link</a>.</p><ul><li>one</li><li>two</li></ul></body></html>";

#[tokio::test]
async fn an_html_page_becomes_text_with_its_title_and_source() {
    let (addr, _) = answering("GET", "/page", "text/html; charset=utf-8", PAGE.into()).await;
    let tool = fetch_url_tool(public_test_fetcher(FetchPolicy::default()));
    assert!(tool.policy().idempotent);
    let url = format!("http://public.test:{}/page", addr.port());
    let out = tool.call(json!({"url": url})).await.unwrap();
    assert_eq!(out.sources, [Source { url: url.clone(), title: "The Test & Page".into() }]);
    let text = &out.content;
    assert!(text.starts_with(&format!("Title: The Test & Page\nURL: {url}\n\n")), "{text}");
    assert!(
        text.contains("Heading")
            && text.contains("First paragraph with a [link][1].")
            && text.contains("* one"),
        "{text}"
    );
    assert!(text.contains("[1]: https://example.org/more"), "{text}");
    assert!(!text.contains("secret") && !text.contains("color"), "{text}");
}

#[tokio::test]
async fn json_passes_through_and_binary_is_refused() {
    let (addr, _) = answering("GET", "/data.json", "application/json", r#"{"a": [1, 2]}"#.into()).await;
    let fetcher = public_test_fetcher(FetchPolicy::default());
    let page = fetcher.fetch(&format!("http://public.test:{}/data.json", addr.port())).await.unwrap();
    assert_eq!((page.text.as_str(), page.title.as_str()), (r#"{"a": [1, 2]}"#, ""));
    let (addr, _) = answering("GET", "/img.png", "image/png", "\u{89}PNG".into()).await;
    let err = fetcher.fetch(&format!("http://public.test:{}/img.png", addr.port())).await.unwrap_err();
    assert!(matches!(err, WebError::NotText { .. }), "{err}");
}

/// A site whose `/go` redirects to `location`, and an internal server that must never be hit.
async fn redirecting_to(location: impl Fn(u16) -> String) -> (SocketAddr, Seen, SocketAddr, Seen) {
    let (internal, internal_seen) = answering("GET", "/secret", "text/plain", "internal secret".into()).await;
    let location = location(internal.port());
    let seen = Seen::default();
    let s = seen.clone();
    let go = move |headers: HeaderMap| {
        let location = location.clone();
        async move {
            s.record("/go", None, headers, Bytes::new());
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
    };
    let site = serve(
        Router::new()
            .route("/go", get(go))
            .route("/page", get(|| async { ([(header::CONTENT_TYPE, "text/html")], PAGE) })),
    )
    .await;
    (site, seen, internal, internal_seen)
}

#[tokio::test]
async fn a_redirect_to_a_loopback_literal_or_a_name_for_it_is_refused() {
    for (location, host) in [
        (
            Box::new(|port: u16| format!("http://127.0.0.1:{port}/secret")) as Box<dyn Fn(u16) -> String>,
            "127.0.0.1",
        ),
        (Box::new(|port: u16| format!("http://[::ffff:127.0.0.1]:{port}/secret")), "[::ffff:7f00:1]"),
        (Box::new(|port: u16| format!("http://internal.test:{port}/secret")), "internal.test"),
    ] {
        let (site, site_seen, _, internal_seen) = redirecting_to(location).await;
        let fetcher = public_test_fetcher(FetchPolicy::default());
        let err = fetcher.fetch(&format!("http://public.test:{}/go", site.port())).await.unwrap_err();
        let WebError::Refused { host: refused, ip, .. } = &err else { panic!("not refused: {err}") };
        assert_eq!(refused, host);
        assert!(ip.is_loopback() || ip.to_string() == "::ffff:127.0.0.1", "{err}");
        assert!(err.to_string().contains("fetch_url only reads public addresses"), "{err}");
        assert_eq!((site_seen.count(), internal_seen.count()), (1, 0), "{err}");
    }
}

#[tokio::test]
async fn a_relative_redirect_on_an_allowed_host_is_followed() {
    let (site, site_seen, _, _) = redirecting_to(|_| "/page".into()).await;
    let page = public_test_fetcher(FetchPolicy::default())
        .fetch(&format!("http://public.test:{}/go", site.port()))
        .await
        .unwrap();
    assert_eq!(
        (page.url, page.title, site_seen.count()),
        (format!("http://public.test:{}/page", site.port()), "The Test & Page".into(), 1)
    );
}

#[tokio::test]
async fn names_resolving_to_private_addresses_and_private_literals_are_refused_without_connecting() {
    let (addr, seen) = answering("GET", "/secret", "text/plain", "internal secret".into()).await;
    let fetcher = public_test_fetcher(FetchPolicy::default());
    let port = addr.port();
    for url in [
        format!("http://rebind.test:{port}/secret"),
        format!("http://mixed.test:{port}/secret"),
        format!("http://127.0.0.1:{port}/secret"),
        format!("http://[::1]:{port}/secret"),
        format!("http://0x7f.1:{port}/secret"),
        format!("http://2130706433:{port}/secret"),
        format!("http://0.0.0.0:{port}/secret"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.0.0.1/".into(),
        "http://192.168.1.1/".into(),
        "http://100.64.0.1/".into(),
        "http://[fd00::1]/".into(),
        "http://[fe80::1]/".into(),
        "http://224.0.0.1/".into(),
    ] {
        let started = Instant::now();
        let err = fetcher.fetch(&url).await.unwrap_err();
        assert!(matches!(err, WebError::Refused { .. }), "{url}: {err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{url} took {:?}", started.elapsed());
    }
    assert_eq!(seen.count(), 0);
    // The same server is readable when the policy says private addresses are fine.
    let open = Fetcher::new(FetchPolicy { allow_private: true, ..FetchPolicy::default() }).unwrap();
    assert_eq!(open.fetch(&format!("http://127.0.0.1:{port}/secret")).await.unwrap().text, "internal secret");
}

#[tokio::test]
async fn other_schemes_and_non_urls_are_refused() {
    let fetcher = Fetcher::new(FetchPolicy::default()).unwrap();
    for url in [
        "file:///etc/passwd",
        "ftp://example.org/x",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "gopher://example.org/",
    ] {
        let err = fetcher.fetch(url).await.unwrap_err();
        assert!(matches!(err, WebError::Scheme { .. }), "{url}: {err}");
        assert!(err.to_string().contains("only http and https URLs are fetched"), "{err}");
    }
    assert!(matches!(fetcher.fetch("not a url").await.unwrap_err(), WebError::BadUrl { .. }));
}

#[tokio::test]
async fn a_huge_page_is_read_up_to_the_cap_and_its_text_cut() {
    let (addr, _) = answering("GET", "/huge", "text/plain", "word ".repeat(1_000_000)).await;
    let policy = FetchPolicy { max_body_bytes: 64 << 10, max_text_chars: 1000, ..FetchPolicy::default() };
    let tool = fetch_url_tool(public_test_fetcher(policy));
    let out = tool.call(json!({"url": format!("http://public.test:{}/huge", addr.port())})).await.unwrap();
    assert!(
        out.content.contains("[the page is longer than 65536 bytes; only its start was read]\n"),
        "{}",
        &out.content[..300]
    );
    assert!(out.content.contains("[text cut at 1000 of 65536 characters]\n"), "{}", &out.content[..300]);
    let text = out.content.split_once("\n\n").unwrap().1;
    assert_eq!(text.chars().count(), 1000);
}

#[tokio::test]
async fn a_slow_server_times_out_and_redirect_loops_end() {
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    };
    let seen = Seen::default();
    let s = seen.clone();
    let again = move |headers: HeaderMap| {
        s.record("/loop", None, headers, Bytes::new());
        async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/loop")]) }
    };
    let addr = serve(Router::new().route("/slow", get(slow)).route("/loop", get(again))).await;
    let policy = FetchPolicy { timeout: Duration::from_millis(500), ..FetchPolicy::default() };
    let fetcher = public_test_fetcher(policy);
    let started = Instant::now();
    let err = fetcher.fetch(&format!("http://public.test:{}/slow", addr.port())).await.unwrap_err();
    assert!(matches!(err, WebError::Timeout { .. }) && err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let err = public_test_fetcher(FetchPolicy::default())
        .fetch(&format!("http://public.test:{}/loop", addr.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, WebError::TooManyRedirects { max: 5, .. }), "{err}");
    assert_eq!(seen.count(), 6);
}

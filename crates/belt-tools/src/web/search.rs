//! `web_search`: a query to the configured backend, answered as a numbered list of results
//! (title, URL, snippet) with the results as sources. Three wire formats: SearXNG's JSON API
//! (self-hosted, no key), Brave Search's API (`X-Subscription-Token`) and Tavily's (a JSON
//! POST with the key).

use std::time::Duration;

use belt_core::tools::{Source, Tool, ToolOutput};
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::{USER_AGENT, WebError, error_chain, install_crypto_provider, read_body, seconds};

/// The most bytes of a search answer read (a page of results is a few tens of KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The most results one search returns, whatever the caller asks.
const MAX_RESULTS: usize = 20;

/// Which search API answers `web_search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackend {
    /// A SearXNG instance (`url` required; its settings must allow the `json` format).
    Searxng,
    /// Brave Search's web search API (`api_key` required).
    Brave,
    /// Tavily's search API (`api_key` required).
    Tavily,
}

impl SearchBackend {
    fn name(self) -> &'static str {
        match self {
            SearchBackend::Searxng => "SearXNG",
            SearchBackend::Brave => "Brave Search",
            SearchBackend::Tavily => "Tavily",
        }
    }
}

/// Where `web_search` searches, as a configuration file or [`WebSearchConfig::from_env`]
/// gives it. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSearchConfig {
    pub backend: SearchBackend,
    /// The API's base URL: the SearXNG instance, or another address for Brave or Tavily
    /// (a proxy, a test server).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Results per search unless the model asks for fewer (at most 20).
    #[serde(default = "default_max_results")]
    pub max_results: usize,
    /// The whole request, answer included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_max_results() -> usize {
    8
}

fn default_timeout_secs() -> u64 {
    20
}

impl std::fmt::Debug for WebSearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSearchConfig")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_results", &self.max_results)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl WebSearchConfig {
    /// A configuration for `backend` with the defaults.
    pub fn new(backend: SearchBackend) -> Self {
        WebSearchConfig {
            backend,
            url: None,
            api_key: None,
            max_results: default_max_results(),
            timeout_secs: default_timeout_secs(),
        }
    }

    /// The backend the environment configures, if any: `BELT_SEARXNG_URL` (SearXNG),
    /// `BRAVE_SEARCH_API_KEY` or `BRAVE_API_KEY` (Brave), `TAVILY_API_KEY` (Tavily), in that
    /// order; `BELT_WEB_SEARCH=searxng|brave|tavily` picks one when several are set.
    pub fn from_env() -> Option<WebSearchConfig> {
        WebSearchConfig::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`WebSearchConfig::from_env`] over another environment (a test's, an embedder's).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<WebSearchConfig> {
        let searxng = var("BELT_SEARXNG_URL");
        let brave = var("BRAVE_SEARCH_API_KEY").or_else(|| var("BRAVE_API_KEY"));
        let tavily = var("TAVILY_API_KEY");
        let pick = |backend| match backend {
            SearchBackend::Searxng => searxng.clone().map(|url| (backend, Some(url), None)),
            SearchBackend::Brave => brave.clone().map(|key| (backend, None, Some(key))),
            SearchBackend::Tavily => tavily.clone().map(|key| (backend, None, Some(key))),
        };
        let chosen = match var("BELT_WEB_SEARCH").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("searxng") => pick(SearchBackend::Searxng),
            Some("brave") => pick(SearchBackend::Brave),
            Some("tavily") => pick(SearchBackend::Tavily),
            _ => [SearchBackend::Searxng, SearchBackend::Brave, SearchBackend::Tavily]
                .into_iter()
                .find_map(pick),
        };
        let (backend, url, api_key) = chosen?;
        Some(WebSearchConfig { url, api_key, ..WebSearchConfig::new(backend) })
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

/// A configured search backend with its HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct WebSearch {
    config: WebSearchConfig,
    endpoint: Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSearch")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint.as_str())
            .finish()
    }
}

impl WebSearch {
    /// Check the configuration (a URL for SearXNG, a key for the others) and build the client.
    pub fn new(config: WebSearchConfig) -> Result<WebSearch, WebError> {
        let has_key = config.api_key.as_deref().is_some_and(|k| !k.trim().is_empty());
        let (base, path) = match config.backend {
            SearchBackend::Searxng => {
                let url = config.url.clone().ok_or_else(|| {
                    WebError::Config("SearXNG needs its instance's URL (`url`, or BELT_SEARXNG_URL)".into())
                })?;
                (url, "/search")
            }
            SearchBackend::Brave if !has_key => {
                return Err(WebError::Config(
                    "Brave Search needs an API key (`api_key`, or BRAVE_API_KEY)".into(),
                ));
            }
            SearchBackend::Tavily if !has_key => {
                return Err(WebError::Config(
                    "Tavily needs an API key (`api_key`, or TAVILY_API_KEY)".into(),
                ));
            }
            SearchBackend::Brave => (
                config.url.clone().unwrap_or_else(|| "https://api.search.brave.com".into()),
                "/res/v1/web/search",
            ),
            SearchBackend::Tavily => {
                (config.url.clone().unwrap_or_else(|| "https://api.tavily.com".into()), "/search")
            }
        };
        let joined = format!("{}{path}", base.trim_end_matches('/'));
        let endpoint = Url::parse(&joined)
            .map_err(|e| WebError::BadUrl { url: joined.clone(), reason: e.to_string() })?;
        install_crypto_provider();
        let client = reqwest::Client::builder()
            // The key travels in a header: never to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_secs))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| WebError::Client(error_chain(&e)))?;
        Ok(WebSearch { config, endpoint, client })
    }

    pub fn config(&self) -> &WebSearchConfig {
        &self.config
    }

    /// Search for `query`; at most `count` results (the configured number when `None`).
    pub async fn search(&self, query: &str, count: Option<usize>) -> Result<Vec<SearchHit>, WebError> {
        let count = count.unwrap_or(self.config.max_results).clamp(1, MAX_RESULTS);
        let limit = Duration::from_secs(self.config.timeout_secs);
        let url = self.endpoint.to_string();
        let answer = tokio::time::timeout(limit, self.request(query, count))
            .await
            .unwrap_or_else(|_| Err(WebError::Timeout { url, secs: seconds(limit) }))?;
        let mut hits = self.parse(&answer)?;
        hits.truncate(count);
        Ok(hits)
    }

    async fn request(&self, query: &str, count: usize) -> Result<Vec<u8>, WebError> {
        let key = self.config.api_key.as_deref().unwrap_or("").trim();
        let mut url = self.endpoint.clone();
        let request = match self.config.backend {
            SearchBackend::Searxng => {
                url.query_pairs_mut().append_pair("q", query).append_pair("format", "json");
                self.client.get(url.clone())
            }
            SearchBackend::Brave => {
                url.query_pairs_mut().append_pair("q", query).append_pair("count", &count.to_string());
                self.client.get(url.clone()).header("X-Subscription-Token", secret(key)?)
            }
            SearchBackend::Tavily => {
                let body = serde_json::json!({"api_key": key, "query": query, "max_results": count, "search_depth": "basic"});
                self.client
                    .post(url.clone())
                    .header(AUTHORIZATION, secret(&format!("Bearer {key}"))?)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string())
            }
        };
        let shown = self.endpoint.to_string();
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                WebError::Timeout { url: shown.clone(), secs: self.config.timeout_secs as f64 }
            } else {
                WebError::Request { url: shown.clone(), message: error_chain(&e) }
            }
        };
        let response = request.header(ACCEPT, "application/json").send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(WebError::Status { url: shown.clone(), status, hint: self.status_hint(status) });
        }
        let (body, _) = read_body(response, MAX_ANSWER_BYTES).await.map_err(failed)?;
        Ok(body)
    }

    fn status_hint(&self, status: u16) -> String {
        match (self.config.backend, status) {
            (SearchBackend::Searxng, 403) => {
                " (SearXNG refuses JSON unless `json` is in `search.formats` of its settings.yml)".into()
            }
            (_, 401 | 403) => format!(" (the {} API key was refused: check it)", self.config.backend.name()),
            (_, 429) => " (rate limited: try again later, or fewer searches)".into(),
            _ => String::new(),
        }
    }

    fn parse(&self, answer: &[u8]) -> Result<Vec<SearchHit>, WebError> {
        let backend = self.config.backend;
        let decode =
            |e: serde_json::Error| WebError::Decode { backend: backend.name(), message: e.to_string() };
        let results = match backend {
            SearchBackend::Searxng | SearchBackend::Tavily => {
                serde_json::from_slice::<ResultsAnswer>(answer).map_err(decode)?.results
            }
            SearchBackend::Brave => {
                serde_json::from_slice::<BraveAnswer>(answer).map_err(decode)?.web.results
            }
        };
        Ok(results
            .into_iter()
            .filter(|r| !r.url.is_empty())
            .map(|r| SearchHit {
                title: clean(&r.title, 300),
                url: r.url,
                snippet: clean(r.content.as_deref().or(r.description.as_deref()).unwrap_or(""), 500),
            })
            .collect())
    }
}

fn secret(value: &str) -> Result<HeaderValue, WebError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| WebError::Config("the API key has characters a header cannot carry".into()))?;
    header.set_sensitive(true);
    Ok(header)
}

/// SearXNG's and Tavily's answers: `{"results": [{"title", "url", "content"}]}`.
#[derive(Deserialize, Default)]
struct ResultsAnswer {
    #[serde(default)]
    results: Vec<RawHit>,
}

/// Brave's: `{"web": {"results": [{"title", "url", "description"}]}}`.
#[derive(Deserialize)]
struct BraveAnswer {
    #[serde(default)]
    web: ResultsAnswer,
}

#[derive(Deserialize)]
struct RawHit {
    #[serde(default)]
    title: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Snippets carry markup (Brave's `<strong>`) and entities: plain text, blanks collapsed,
/// at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let decoded = plain
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let collapsed = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(max).collect()
}

/// The results as the model reads them: numbered, each with its title, URL and snippet.
fn render(query: &str, backend: SearchBackend, hits: &[SearchHit]) -> String {
    if hits.is_empty() {
        return format!("No results for \"{query}\" ({}).", backend.name());
    }
    let mut out = format!("Results for \"{query}\" ({}):\n", backend.name());
    for (i, hit) in hits.iter().enumerate() {
        out.push_str(&format!(
            "{}. {}\n   {}\n",
            i + 1,
            if hit.title.is_empty() { "(untitled)" } else { &hit.title },
            hit.url
        ));
        if !hit.snippet.is_empty() {
            out.push_str(&format!("   {}\n", hit.snippet));
        }
    }
    out
}

/// The `web_search` tool's arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    count: Option<usize>,
}

/// The `web_search` tool over `config`'s backend. Idempotent (a read).
pub fn web_search_tool(config: WebSearchConfig) -> Result<Tool, WebError> {
    let search = WebSearch::new(config)?;
    let description = "Search the web. Returns a numbered list of results: title, URL and a snippet. \
        Read a result's page with fetch_url when the snippet is not enough.";
    let parameters = serde_json::json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to search for."},
            "count": {"type": ["integer", "null"], "description": "How many results (1-20)."}
        },
        "required": ["query", "count"],
        "additionalProperties": false
    });
    let timeout = Duration::from_secs(search.config.timeout_secs + 5);
    Ok(Tool::dynamic("web_search", description, parameters, move |arguments| {
        let search = search.clone();
        async move {
            let args: SearchArgs = serde_json::from_value(arguments).map_err(|e| {
                belt_core::EffectError::new(format!(
                    "the arguments do not match web_search's parameters: {e}"
                ))
            })?;
            let hits = search.search(&args.query, args.count).await.map_err(WebError::into_effect)?;
            let sources =
                hits.iter().map(|h| Source { url: h.url.clone(), title: h.title.clone() }).collect();
            Ok(ToolOutput::new(render(&args.query, search.config.backend, &hits)).with_sources(sources))
        }
    })
    .idempotent()
    .timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_rejects_unknown_fields_and_hides_the_key() {
        let config: WebSearchConfig =
            serde_json::from_str(r#"{"backend": "brave", "api_key": "k-123"}"#).unwrap();
        assert_eq!((config.backend, config.max_results, config.timeout_secs), (SearchBackend::Brave, 8, 20));
        let shown = format!("{config:?}");
        assert!(!shown.contains("k-123") && shown.contains("<redacted>"), "{shown}");
        let err =
            serde_json::from_str::<WebSearchConfig>(r#"{"backend": "brave", "apikey": "k"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `apikey`"), "{err}");
        assert!(format!("{:?}", WebSearch::new(config).unwrap()).contains("<redacted>"));
    }

    #[test]
    fn the_environment_picks_a_backend() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(WebSearchConfig::from_vars(env(&[])), None);
        let brave =
            WebSearchConfig::from_vars(env(&[("BRAVE_API_KEY", "b"), ("TAVILY_API_KEY", "t")])).unwrap();
        assert_eq!((brave.backend, brave.api_key.as_deref()), (SearchBackend::Brave, Some("b")));
        let chosen = env(&[("BRAVE_API_KEY", "b"), ("TAVILY_API_KEY", "t"), ("BELT_WEB_SEARCH", "tavily")]);
        assert_eq!(WebSearchConfig::from_vars(chosen).unwrap().backend, SearchBackend::Tavily);
        let searxng =
            WebSearchConfig::from_vars(env(&[("BELT_SEARXNG_URL", "http://s"), ("BRAVE_API_KEY", "b")]))
                .unwrap();
        assert_eq!((searxng.backend, searxng.url.as_deref()), (SearchBackend::Searxng, Some("http://s")));
    }

    #[test]
    fn missing_urls_and_keys_are_named() {
        let err = WebSearch::new(WebSearchConfig::new(SearchBackend::Searxng)).unwrap_err();
        assert!(err.to_string().contains("BELT_SEARXNG_URL"), "{err}");
        let err = WebSearch::new(WebSearchConfig::new(SearchBackend::Tavily)).unwrap_err();
        assert!(err.to_string().contains("TAVILY_API_KEY"), "{err}");
    }

    #[test]
    fn snippets_lose_markup() {
        assert_eq!(clean("The <strong>Rust</strong> &amp;\n  book", 100), "The Rust & book");
        assert_eq!(clean("abcdef", 3), "abc");
    }
}

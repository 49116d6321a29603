//! [`McpServerSpec`]: how to reach one MCP server. The one shape behind belt.toml's
//! `[mcp.NAME]`, a workflow's `mcp_servers:` and `--mcp NAME=…` on the command line.
//!
//! ```
//! use belt_tools::mcp::McpServerSpec;
//!
//! let (name, spec) = McpServerSpec::parse_cli("files=npx -y @modelcontextprotocol/server-filesystem /tmp").unwrap();
//! assert_eq!(name, "files");
//! assert_eq!(spec.command.as_deref(), Some("npx"));
//! let (_, remote) = McpServerSpec::parse_cli("docs=https://mcp.example.com/mcp").unwrap();
//! assert_eq!(remote.url.as_deref(), Some("https://mcp.example.com/mcp"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::McpError;

/// How to reach one MCP server: a command speaking MCP on its stdin/stdout (`command`,
/// `args`, `env`) or a Streamable HTTP endpoint (`url`, `headers`), and how long to wait
/// for it.
///
/// `env` and `headers` usually hold secrets (API keys, bearer tokens): `Debug` and every
/// error message show their keys only.
///
/// A stdio server gets `env` on top of a minimal environment (`HOME`, `PATH`, `USER`,
/// `LOGNAME`, `SHELL`, `TERM`, `LANG`, `TMPDIR`, as the official MCP SDKs do), not belt's
/// whole environment: provider API keys are not handed to third-party servers.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// The program of a stdio server (looked up on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for it (secrets welcome: never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The endpoint of a Streamable HTTP server (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP headers sent with every request (`Authorization`, say; never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Seconds one tool call may take (60 unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds starting may take: spawning or connecting, `initialize`, listing the tools
    /// (20 unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<u64>,
}

/// A server's way in, once the spec is checked.
#[derive(Debug)]
pub(crate) enum Endpoint<'a> {
    Stdio { command: &'a str },
    Http { url: &'a str },
}

impl McpServerSpec {
    pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
    pub const DEFAULT_STARTUP_TIMEOUT_SECS: u64 = 20;

    /// A stdio server: `command args…`.
    pub fn stdio(command: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        McpServerSpec {
            command: Some(command.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..McpServerSpec::default()
        }
    }

    /// A Streamable HTTP server at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        McpServerSpec { url: Some(url.into()), ..McpServerSpec::default() }
    }

    /// `NAME=URL` (a Streamable HTTP server: the value starts with `http://` or `https://`)
    /// or `NAME=COMMAND ARGS…` (a stdio server; the command line is split as a POSIX shell
    /// would, quotes included), as `--mcp` takes it.
    pub fn parse_cli(s: &str) -> Result<(String, McpServerSpec), McpError> {
        let invalid = |server: &str, reason: String| McpError::InvalidSpec { server: server.into(), reason };
        let Some((name, value)) = s.split_once('=') else {
            return Err(invalid(
                "?",
                format!("`--mcp {s}` has no `=`: write `--mcp NAME=COMMAND ARGS…` or `--mcp NAME=URL`"),
            ));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(invalid(
                name,
                "a server's name is made of letters, digits, `_` and `-` (it prefixes its tools' names)"
                    .into(),
            ));
        }
        let value = value.trim();
        let spec = if value.starts_with("http://") || value.starts_with("https://") {
            McpServerSpec::http(value)
        } else {
            let words = shlex::split(value).ok_or_else(|| {
                invalid(name, format!("`{value}` is not a command line (an unclosed quote?)"))
            })?;
            let mut words = words.into_iter();
            let command = words.next().ok_or_else(|| invalid(name, "no command after `=`".into()))?;
            McpServerSpec::stdio(command, words)
        };
        spec.check(name)?;
        Ok((name.to_string(), spec))
    }

    /// Exactly one of `command` and `url`, each with only its own settings.
    pub(crate) fn check(&self, server: &str) -> Result<Endpoint<'_>, McpError> {
        let invalid = |reason: &str| McpError::InvalidSpec { server: server.into(), reason: reason.into() };
        if self.timeout == Some(0) || self.startup_timeout == Some(0) {
            return Err(invalid("`timeout` and `startup_timeout` are seconds, at least 1"));
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                Err(invalid("set `command` (a stdio server) or `url` (Streamable HTTP), not both"))
            }
            (None, None) => {
                Err(invalid("set `command` (a stdio server) or `url` (a Streamable HTTP server)"))
            }
            (Some(_), None) if !self.headers.is_empty() => {
                Err(invalid("`headers` are for a `url` server; a stdio server takes `env`"))
            }
            (Some(command), None) if command.trim().is_empty() => Err(invalid("`command` is empty")),
            (Some(command), None) => Ok(Endpoint::Stdio { command }),
            (None, Some(_)) if !self.args.is_empty() || !self.env.is_empty() => {
                Err(invalid("`args` and `env` are for a `command` server; a `url` server takes `headers`"))
            }
            (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                Err(invalid("`url` must start with http:// or https://"))
            }
            (None, Some(url)) => Ok(Endpoint::Http { url }),
        }
    }

    /// The limit on one tool call.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT_SECS))
    }

    /// The limit on starting.
    pub fn startup_limit(&self) -> Duration {
        Duration::from_secs(self.startup_timeout.unwrap_or(Self::DEFAULT_STARTUP_TIMEOUT_SECS))
    }

    /// The spec with `${NAME}` in `env` and `headers` values replaced by the variable
    /// `NAME` as `var` reads it: a spec recorded with a run (`--mcp`, an HTTP body, a
    /// workflow file) then names its secrets instead of holding them. A variable that is
    /// not set is an error naming it (and the key, never a value).
    pub fn with_vars(
        &self,
        server: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<McpServerSpec, McpError> {
        let expand = |what: &str, key: &str, value: &str| -> Result<String, McpError> {
            let mut out = String::with_capacity(value.len());
            let mut rest = value;
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[start..]);
                    return Ok(out);
                };
                let name = &after[..end];
                let found = var(name).ok_or_else(|| McpError::InvalidSpec {
                    server: server.to_string(),
                    reason: format!(
                        "{what} `{key}` refers to ${{{name}}}, which is not set; set it in the environment"
                    ),
                })?;
                out.push_str(&found);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        };
        let mut spec = self.clone();
        for (k, v) in spec.env.iter_mut() {
            *v = expand("env", k, v)?;
        }
        for (k, v) in spec.headers.iter_mut() {
            *v = expand("header", k, v)?;
        }
        Ok(spec)
    }
}

/// Keys only: the values of `env` and `headers` are secrets more often than not.
impl fmt::Debug for McpServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |map: &BTreeMap<String, String>| {
            map.keys().map(|k| (k.clone(), "<redacted>")).collect::<BTreeMap<_, _>>()
        };
        f.debug_struct("McpServerSpec")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &keys(&self.env))
            .field("url", &self.url.as_deref().map(redact_url))
            .field("headers", &keys(&self.headers))
            .field("timeout", &self.timeout)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

/// `url` without what may be a secret: a password (`user:pass@`) and the query
/// (`?api_key=…`) are replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((path, _)) => (path, "?<redacted>"),
        None => (url, ""),
    };
    let Some((scheme, rest)) = before_query.split_once("://") else {
        return format!("{before_query}{query}");
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}:<redacted>@{host}", user.split(':').next().unwrap_or_default()),
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_in_env_and_headers_are_filled_in_and_a_missing_one_is_named() {
        let mut spec = McpServerSpec::http("https://mcp.example.com/mcp");
        spec.headers.insert("Authorization".into(), "Bearer ${DOCS_TOKEN}".into());
        let var = |n: &str| (n == "DOCS_TOKEN").then(|| "s3cret".to_string());
        let filled = spec.with_vars("docs", var).unwrap();
        assert_eq!(filled.headers["Authorization"], "Bearer s3cret");
        let mut stdio = McpServerSpec::stdio("srv", ["a"]);
        stdio.env.insert("KEY".into(), "${NOPE}-x".into());
        let e = stdio.with_vars("srv", var).unwrap_err().to_string();
        assert!(e.contains("env `KEY` refers to ${NOPE}, which is not set"), "{e}");
        stdio.env.insert("KEY".into(), "plain ${unclosed".into());
        assert_eq!(stdio.with_vars("srv", var).unwrap().env["KEY"], "plain ${unclosed");
    }

    #[test]
    fn cli_command_lines_split_like_a_shell() {
        let (name, spec) = McpServerSpec::parse_cli("fs=npx -y '@scope/pkg name' --root \"/a b\"").unwrap();
        assert_eq!(name, "fs");
        assert_eq!(spec.command.as_deref(), Some("npx"));
        assert_eq!(spec.args, ["-y", "@scope/pkg name", "--root", "/a b"]);
        assert_eq!(spec.url, None);
    }

    #[test]
    fn cli_urls_are_http_servers() {
        let (name, spec) = McpServerSpec::parse_cli("docs=http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!((name.as_str(), spec.url.as_deref()), ("docs", Some("http://127.0.0.1:3001/mcp")));
        assert!(spec.command.is_none());
    }

    #[test]
    fn cli_mistakes_say_what_to_write() {
        let no_eq = McpServerSpec::parse_cli("npx server").unwrap_err().to_string();
        assert!(no_eq.contains("--mcp NAME=COMMAND"), "{no_eq}");
        let bad_name = McpServerSpec::parse_cli("my server=npx x").unwrap_err().to_string();
        assert!(bad_name.contains("letters, digits"), "{bad_name}");
        let quote = McpServerSpec::parse_cli("x=npx 'open").unwrap_err().to_string();
        assert!(quote.contains("unclosed quote"), "{quote}");
        let empty = McpServerSpec::parse_cli("x=").unwrap_err().to_string();
        assert!(empty.contains("no command"), "{empty}");
    }

    #[test]
    fn a_spec_is_either_stdio_or_http() {
        let both = McpServerSpec { url: Some("http://x".into()), ..McpServerSpec::stdio("a", ["b"]) };
        assert!(both.check("s").is_err());
        assert!(McpServerSpec::default().check("s").is_err());
        let mut headers_on_stdio = McpServerSpec::stdio("a", Vec::<String>::new());
        headers_on_stdio.headers.insert("Authorization".into(), "x".into());
        assert!(headers_on_stdio.check("s").unwrap_err().to_string().contains("`headers` are for a `url`"));
        assert!(McpServerSpec::http("ftp://x").check("s").is_err());
        let zero = McpServerSpec { timeout: Some(0), ..McpServerSpec::http("http://x") };
        assert!(zero.check("s").is_err());
    }

    #[test]
    fn config_files_deserialize_and_typos_are_refused() {
        let spec: McpServerSpec = serde_json::from_value(serde_json::json!({
            "command": "uvx", "args": ["mcp-server-fetch"], "env": {"TOKEN": "s3cret"}, "timeout": 30
        }))
        .unwrap();
        assert_eq!(spec.call_timeout(), Duration::from_secs(30));
        assert_eq!(spec.startup_limit(), Duration::from_secs(20));
        let typo = serde_json::from_value::<McpServerSpec>(serde_json::json!({"comand": "uvx"}));
        assert!(typo.unwrap_err().to_string().contains("unknown field `comand`"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut spec = McpServerSpec::stdio("server", ["--flag"]);
        spec.env.insert("API_KEY".into(), "sk-live-123".into());
        let debug = format!("{spec:?}");
        assert!(debug.contains("API_KEY") && !debug.contains("sk-live-123"), "{debug}");

        let mut http = McpServerSpec::http("https://bob:hunter2@mcp.example.com/mcp?token=abc");
        http.headers.insert("Authorization".into(), "Bearer xyz".into());
        let debug = format!("{http:?}");
        assert!(debug.contains("Authorization") && debug.contains("mcp.example.com/mcp"), "{debug}");
        for secret in ["Bearer xyz", "hunter2", "token=abc"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn urls_lose_passwords_and_queries() {
        assert_eq!(redact_url("http://127.0.0.1:9/mcp"), "http://127.0.0.1:9/mcp");
        assert_eq!(redact_url("https://u:p@h/x?k=v"), "https://u:<redacted>@h/x?<redacted>");
        assert_eq!(redact_url("https://h?k=v"), "https://h?<redacted>");
    }
}

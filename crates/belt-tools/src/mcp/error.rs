//! Why an MCP server could not be configured or started. Every message names the server and
//! says what to do about it; none shows a secret (environment values, header values, a URL's
//! password or query).

/// Why an MCP server could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The server's configuration (belt.toml `[mcp.NAME]`, a workflow's `mcp_servers:`, or
    /// `--mcp NAME=…`) is not usable.
    #[error("MCP server `{server}`: {reason}")]
    InvalidSpec { server: String, reason: String },

    /// The command of a stdio server is not installed (or not on `PATH`).
    #[error(
        "MCP server `{server}`: the command `{command}` was not found; install it, or give its full \
         path (the server's PATH is {path})"
    )]
    CommandNotFound { server: String, command: String, path: String },

    /// The command exists but could not be started.
    #[error("MCP server `{server}`: could not start `{command}`: {source}")]
    Spawn {
        server: String,
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// Nothing answered at the server's URL, or it answered something else than MCP's
    /// Streamable HTTP.
    #[error("MCP server `{server}`: could not connect to {url}: {detail}")]
    Unreachable { server: String, url: String, detail: String },

    /// The server's process ended before it finished starting.
    #[error("MCP server `{server}`: it exited ({status}) before it finished starting{output}")]
    Exited { server: String, status: String, output: String },

    /// The server answered, but not as an MCP server does.
    #[error("MCP server `{server}`: {detail}")]
    NotMcp { server: String, detail: String },

    /// Starting (spawning or connecting, `initialize`, listing the tools) took longer than
    /// the server's `startup_timeout`.
    #[error(
        "MCP server `{server}`: it did not finish starting within {secs} s (while {phase}); if it \
         is only slow (npx downloading a package, say), raise its `startup_timeout`{output}"
    )]
    StartupTimeout { server: String, secs: u64, phase: &'static str, output: String },
}

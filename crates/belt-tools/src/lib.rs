//! Tools for belt's agents, as [`belt_core::Tool`]s the engine runs under its policies
//! (timeouts, retries where safe, events, the journal, the dead-letter queue):
//!
//! - [`mcp`]: the tools of any MCP server, over stdio or Streamable HTTP;
//! - [`sandbox`]: `run_code`, Python 3 and POSIX sh in a bubblewrap sandbox;
//! - [`web`]: `web_search` over a configured backend and `fetch_url`.

pub mod mcp;
pub mod sandbox;
pub mod web;

//! `belt mcp tools NAME`: what an MCP server offers, as belt's agents will see it.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use belt_app::App;

use crate::error::CliError;

/// Start the server `name` (belt.toml's `[mcp.NAME]`, or one given with `--mcp`), list its
/// tools, stop it.
pub async fn list(name: &str, mcp: &[String], json: bool, app: &App) -> Result<i32, CliError> {
    let mut servers = app.tool_host().configured_servers().clone();
    servers.extend(crate::run_cmd::mcp_servers(mcp)?);
    let Some(spec) = servers.get(name) else {
        let known: Vec<&str> = servers.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "no MCP server is declared: add [mcp.NAME] to belt.toml, or give one with --mcp NAME=COMMAND|URL"
                .to_string()
        } else {
            format!("the servers are: {}", known.join(", "))
        };
        return Err(CliError::Usage(format!("no MCP server named `{name}`; {hint}")));
    };
    let server = app
        .tool_host()
        .server(name, spec)
        .await
        .map_err(|e| CliError::Usage(format!("the MCP server `{name}` could not be started: {e}")))?;
    let catalog = server.catalog();
    if json {
        let entries: Vec<serde_json::Value> = catalog
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.model_name, "server_name": e.original_name, "description": e.description,
                    "idempotent": e.idempotent, "parameters": e.schema,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default());
        return Ok(0);
    }
    println!("MCP server `{name}` (protocol {}): {} tool(s)", server.protocol_version(), catalog.len());
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["tool (--tools NAME.TOOL)", "model calls it", "description", "parameters"]);
    for e in &catalog {
        let params = e
            .schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "));
        table.add_row(vec![
            format!("{name}.{}", e.original_name),
            e.model_name.clone(),
            crate::progress::shorten(&e.description, 80),
            params.unwrap_or_default(),
        ]);
    }
    println!("{table}");
    for skipped in server.skipped() {
        println!("left out: {} ({})", skipped.original_name, skipped.reason);
    }
    Ok(0)
}

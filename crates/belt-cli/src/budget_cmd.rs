//! `belt budget show`: the budget pools of a shared store, with belt.toml's caps beside what
//! every process has spent and holds reserved this day and month.

use belt_app::App;
use belt_core::shared::PoolState;
use belt_store::StoreSpec;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::error::CliError;
use belt_report::words::count;

/// `belt budget show [--json]`.
pub async fn show(json: bool, spec: &StoreSpec, app: &App) -> Result<i32, CliError> {
    let store = crate::run_cmd::open_store(spec).await?;
    let Some(pools) = store.budget_pools() else {
        return Err(CliError::Usage(format!(
            "{spec} keeps no budget pools: they live in a store every process shares; use --store postgres://…"
        )));
    };
    let state = pools.pools().await.map_err(|e| CliError::Usage(e.to_string()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state).expect("pool states serialize"));
        return Ok(0);
    }
    let configured = &app.config().budget_pools;
    if state.is_empty() && configured.is_empty() {
        println!("no budget pools (define them in belt.toml as [budget_pools.NAME])");
        return Ok(0);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["pool", "period", "spent", "reserved", "cap (belt.toml)"]);
    for s in &state {
        let caps = configured.get(&s.pool).map(|c| c.caps());
        let cap = caps.map(|c| if s.period == "month" { c.per_month } else { c.per_day });
        table.add_row(vec![
            s.pool.clone(),
            format!("{} {}", s.period, s.starts),
            amount(s, false),
            amount(s, true),
            cap.map_or_else(|| "not in belt.toml".into(), |b| caps_text(&b)),
        ]);
    }
    for name in configured.keys().filter(|n| !state.iter().any(|s| &s.pool == *n)) {
        table.add_row(vec![name.clone(), "-".into(), "nothing yet".into(), "-".into(), "-".into()]);
    }
    println!("{table}");
    Ok(0)
}

fn amount(s: &PoolState, reserved: bool) -> String {
    let a = if reserved { s.reserved } else { s.spent };
    format!("${:.4}, {}, {}", a.cost_usd, count(a.tokens, "token"), count(a.calls, "call"))
}

fn caps_text(b: &belt_core::Budget) -> String {
    let mut parts = Vec::new();
    if let Some(usd) = b.max_cost_usd {
        parts.push(format!("${usd}"));
    }
    if let Some(t) = b.max_tokens {
        parts.push(count(t, "token"));
    }
    if let Some(c) = b.max_calls {
        parts.push(count(c, "call"));
    }
    if parts.is_empty() { "unlimited".into() } else { parts.join(", ") }
}

//! `belt models`: the models with known prices and capabilities, and those the local model
//! servers that answer serve (which model a run uses when none is named is belt-app's
//! [`belt_app::models::choose`]).

use std::time::Duration;

use belt_llm::pricing::PriceTable;
use belt_llm::providers::BUILTIN_PROVIDERS;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// How long a local server has to list its models (they are asked at once).
const LOCAL_LIMIT: Duration = Duration::from_millis(800);

/// `belt models`: every model with a known price, its prices and capabilities, and
/// whether its provider is configured here; then the models of local servers that answer.
pub async fn list(json: bool, env: &(dyn Fn(&str) -> Option<String> + Sync)) -> i32 {
    let local = belt_app::local::servers(env, LOCAL_LIMIT).await;
    let table = PriceTable::builtin();
    let configured = |provider: &str| {
        BUILTIN_PROVIDERS
            .iter()
            .find(|b| b.name == provider)
            .is_some_and(|b| b.key_env.is_empty() || b.key_env.iter().any(|v| env(v).is_some()))
    };
    let models: Vec<_> = table.models().collect();
    if json {
        let mut rows: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "model": format!("{}/{}", m.provider, m.id),
                    "input_per_mtok": m.price.price().input_per_mtok,
                    "output_per_mtok": m.price.price().output_per_mtok,
                    "price": m.price,
                    "capabilities": m.capabilities,
                    "prices_taken": m.taken,
                    "configured": configured(&m.provider),
                })
            })
            .collect();
        // A local server's models: no price (free unless belt.toml prices them), ready.
        for s in &local {
            for m in s.models().unwrap_or_default() {
                rows.push(serde_json::json!({
                    "model": format!("{}/{m}", s.provider),
                    "local": true,
                    "base_url": s.base_url,
                    "configured": true,
                }));
            }
        }
        println!("{}", serde_json::to_string_pretty(&rows).expect("models serialize"));
        return 0;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "model",
        "in $/Mtok",
        "out $/Mtok",
        "cache r/w $/Mtok",
        "stream",
        "tools",
        "json schema",
        "context",
        "prices as of",
        "ready",
    ]);
    let yes = |b: bool| if b { "yes" } else { "—" };
    for m in &models {
        let p = m.price.price();
        t.add_row(vec![
            format!("{}/{}", m.provider, m.id),
            format!("{:.2}", p.input_per_mtok),
            format!("{:.2}", p.output_per_mtok),
            // Prompt-cache reads and writes (`—`: billed as input).
            match (p.cache_read_per_mtok, p.cache_write_per_mtok) {
                (None, None) => "—".to_string(),
                (r, w) => {
                    let f = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.3}"));
                    format!("{}/{}", f(r), f(w))
                }
            },
            yes(m.capabilities.streaming).into(),
            yes(m.capabilities.tools).into(),
            yes(m.capabilities.json_schema).into(),
            m.capabilities.context_window.map_or("—".into(), |c| format!("{}k", c / 1000)),
            m.taken.clone(),
            yes(configured(&m.provider)).into(),
        ]);
    }
    println!("{t}");
    println!(
        "Prices in USD per million tokens, as of the dates in the table (`belt models --json`); a model \
         without a known price reports its cost as unknown. `ready`: the provider's key is set. \
         simulated/<any> is always available (nominal prices, outputs not from a model)."
    );
    println!("\n{}", local_text(&local));
    0
}

/// The local servers: the models of those that answer, where the others were looked for.
fn local_text(servers: &[belt_app::local::LocalServer]) -> String {
    let mut lines = Vec::new();
    let mut silent = Vec::new();
    for s in servers {
        match s.models() {
            Some(models) => {
                lines.push(format!("Local: {} at {} ({}):", s.provider, s.base_url, s.base_url_env));
                if models.is_empty() {
                    lines.push("  no model loaded".into());
                }
                lines.extend(models.iter().map(|m| format!("  {}/{m}", s.provider)));
            }
            None => silent.push(format!("{} at {} ({})", s.provider, s.base_url, s.base_url_env)),
        }
    }
    if !silent.is_empty() {
        lines.push(format!("No answer from: {} (`belt doctor` says why).", silent.join(", ")));
    }
    lines.push(
        "A local model has no price: its cost shows as unknown unless belt.toml prices it \
         ([prices.\"provider/model\"] input = 0.0, output = 0.0)."
            .into(),
    );
    lines.join("\n")
}

//! `belt models`: the models with known prices and capabilities (which model a run uses
//! when none is named is belt-app's [`belt_app::models::choose`]).

use belt_llm::pricing::PriceTable;
use belt_llm::providers::BUILTIN_PROVIDERS;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// `belt models`: every model with a known price, its prices and capabilities, and
/// whether its provider is configured here.
pub fn list(json: bool, env: &dyn Fn(&str) -> Option<String>) -> i32 {
    let table = PriceTable::builtin();
    let configured = |provider: &str| {
        BUILTIN_PROVIDERS
            .iter()
            .find(|b| b.name == provider)
            .is_some_and(|b| b.key_env.is_empty() || b.key_env.iter().any(|v| env(v).is_some()))
    };
    let models: Vec<_> = table.models().collect();
    if json {
        let rows: Vec<serde_json::Value> = models
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
    0
}

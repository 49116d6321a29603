//! Tools a workflow file's agents may call by name (`tools: [calculator, clock]`).
//!
//! A file cannot hold code, so its agents name tools the host offers. These built-in ones
//! are offered by default — small, safe, offline; a program embedding belt offers its own
//! with [`crate::Bound::with_tools`] (and names them to validation in
//! [`crate::ValidationContext::tools`]). An agent with tools runs the engine's agent loop
//! ([`belt_core::Ctx::llm_with_tools`]): rounds and tool calls are recorded steps, the round
//! cap stops the loop with a reason on record.

use belt_core::tools::{Tool, Tools};
use serde::Deserialize;

/// The built-in tools' names and what they do.
pub const BUILTIN: &[(&str, &str)] = &[
    ("calculator", "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses."),
    ("clock", "The current date and time, in UTC (RFC 3339)."),
];

#[derive(Deserialize, schemars::JsonSchema)]
struct Expression {
    /// The expression, e.g. `(1200 * 0.15) + 40`.
    expression: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Nothing {}

/// The built-in tools.
pub fn builtin() -> Tools {
    let (calculator, clock) = (BUILTIN[0], BUILTIN[1]);
    Tools::new()
        .with(Tool::new(calculator.0, calculator.1, |x: Expression| async move {
            crate::template::arithmetic(&x.expression)
        }))
        .with(Tool::new(clock.0, clock.1, |_: Nothing| async move {
            Ok::<_, String>(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }))
}

/// The tools of `tools` named in `names`, a group's name standing for its tools (unknown
/// names were refused by validation).
pub(crate) fn subset(
    tools: &Tools,
    groups: &std::collections::HashMap<String, Vec<String>>,
    names: &[String],
) -> Option<Tools> {
    if names.is_empty() {
        return None;
    }
    let expanded = names.iter().flat_map(|n| groups.get(n).cloned().unwrap_or_else(|| vec![n.clone()]));
    let picked = expanded.filter_map(|n| tools.get(&n).cloned());
    Some(picked.fold(Tools::new().max_rounds(tools.rounds_cap()), Tools::with))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_calculator_does_arithmetic_and_nothing_else() {
        let tools = builtin();
        let calc = tools.get("calculator").unwrap();
        let call = |e: &str| calc.call(serde_json::json!({"expression": e}));
        let text = |e: &str| {
            let running = call(e);
            async move { running.await.map(|o| o.content).map_err(|e| e.message) }
        };
        assert_eq!(text("(1200 * 0.15) + 40").await.unwrap(), "220.0");
        assert_eq!(text("2 ** 10 // 3").await.unwrap(), "341");
        assert!(text("range(10)").await.unwrap_err().contains("only numbers"));
        assert!(call("1 / 0").await.is_err());
        assert!(text("").await.unwrap_err().contains("empty"));
        let now = tools.get("clock").unwrap().call(serde_json::json!({})).await.unwrap().content;
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
        assert_eq!(tools.specs().len(), BUILTIN.len());
    }
}

//! Tool calling and structured output, on the simulated provider.
//!
//! `cargo run --example tools`
//!
//! An assistant with two Rust tools answers a question through the engine's agent loop
//! (each model round and each tool call is a recorded step), then a structured reply is
//! parsed straight into a Rust type. The simulated provider calls the first tool once
//! with the smallest arguments its schema allows, then answers; with a real model
//! (`--model`-style names such as `openai/gpt-4o-mini`) the same code calls real tools.

use belt::patterns::Flow;
use belt::tools::{Tool, Tools};
use belt::{LlmRequest, RunOptions, SimConfig, StepSpec, Task, Tier};
use schemars::JsonSchema;
use serde::Deserialize;

const MODEL: &str = "simulated/default";

#[derive(JsonSchema, Deserialize)]
struct CityWeather {
    /// The city, e.g. "Lisbon".
    city: String,
}

#[derive(JsonSchema, Deserialize)]
struct ToFahrenheit {
    celsius: f64,
}

/// What the structured reply must hold.
#[derive(JsonSchema, Deserialize)]
struct Advice {
    city: String,
    take_a_coat: bool,
    /// One sentence.
    reason: String,
}

#[tokio::main]
async fn main() {
    let tools = Tools::new()
        .with(Tool::new(
            "city_weather",
            "Current temperature in a city, in °C.",
            |q: CityWeather| async move {
                // A real tool would call a weather API here.
                Ok::<_, String>(serde_json::json!({"city": q.city, "celsius": 11.5, "sky": "rain"}))
            },
        ))
        .with(Tool::new("to_fahrenheit", "Convert °C to °F.", |q: ToFahrenheit| async move {
            Ok::<_, String>(q.celsius * 9.0 / 5.0 + 32.0)
        }))
        .max_rounds(4);

    let flow = Flow::new("tools", move |ctx, task| {
        let tools = tools.clone();
        async move {
            let request = LlmRequest::new(MODEL, task.description.clone())
                .system("You are a weather assistant.")
                .max_tokens(200);
            let reply = ctx.llm_with_tools(StepSpec::new("assistant", Tier::Agent), request, &tools).await?;
            println!("--- assistant (finish: {}) ---", reply.outcome.finish_reason.as_deref().unwrap_or("?"));
            println!("{}\n", reply.text);

            let request =
                LlmRequest::new(MODEL, format!("{}\nAnswer with the advice only.", task.description));
            let (advice, _) = ctx.llm_typed::<Advice>(StepSpec::new("advice", Tier::Agent), request).await?;
            println!("--- structured reply ---");
            println!("{}: take a coat: {} ({})\n", advice.city, advice.take_a_coat, advice.reason);
            Ok(reply.text.to_string())
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(0)));
    let task = Task::new("Should I take a coat in Lisbon today?");
    let result = belt::run(flow, task, options).await.expect("valid options").result().await;
    println!("steps:");
    for a in &result.agents {
        println!(
            "  {:<32} {:<9} {} tokens",
            a.step.as_str(),
            format!("{:?}", a.status),
            a.outcome.usage.input_tokens + a.outcome.usage.output_tokens
        );
    }
    println!(
        "\nstatus: {} · {} calls · ${:.6} (simulated)",
        result.status, result.usage.calls, result.cost_usd
    );
}

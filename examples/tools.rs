//! Tool calling and structured output, on the simulated provider or a real model.
//!
//! `cargo run --example tools` (simulated), or with a model you can call:
//! `cargo run --example tools -- --model openai/gpt-4o-mini` (or `BELT_MODEL=…`; a local
//! server through `OPENAI_BASE_URL=http://127.0.0.1:8080/v1`).
//!
//! An assistant with two Rust tools answers a question through the engine's agent loop
//! (each model round and each tool call is a recorded step), then a structured reply is
//! parsed straight into a Rust type. The simulated provider calls the first tool once
//! with the smallest arguments its schema allows, then answers; a real model calls the
//! real tools as it sees fit.

use belt::patterns::Flow;
use belt::tools::{Tool, Tools};
use belt::{LlmRequest, RunOptions, SimConfig, StepSpec, Task, Tier};
use schemars::JsonSchema;
use serde::Deserialize;

/// The model when neither `--model` nor `BELT_MODEL` names one: offline, labelled simulated.
const SIMULATED: &str = "simulated/default";

/// `--model NAME` (or `--model=NAME`), else `BELT_MODEL`, else the simulated model.
fn model() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = args.iter().position(|a| a == "--model").and_then(|i| args.get(i + 1).cloned());
    let inline = args.iter().find_map(|a| a.strip_prefix("--model=").map(String::from));
    flag.or(inline)
        .or_else(|| std::env::var("BELT_MODEL").ok())
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| SIMULATED.to_string())
}

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

    let model = model();
    let flow = Flow::new("tools", move |ctx, task| {
        let tools = tools.clone();
        let model = model.clone();
        async move {
            let request = LlmRequest::new(&*model, task.description.clone())
                .system("You are a weather assistant.")
                .max_tokens(200);
            let reply = ctx.llm_with_tools(StepSpec::new("assistant", Tier::Agent), request, &tools).await?;
            println!("--- assistant (finish: {}) ---", reply.outcome.finish_reason.as_deref().unwrap_or("?"));
            println!("{}\n", reply.text);

            let request =
                LlmRequest::new(&*model, format!("{}\nAnswer with the advice only.", task.description));
            let (advice, _) = ctx.llm_typed::<Advice>(StepSpec::new("advice", Tier::Agent), request).await?;
            println!("--- structured reply ---");
            println!("{}: take a coat: {} ({})\n", advice.city, advice.take_a_coat, advice.reason);
            Ok(reply.text.to_string())
        }
    });
    // The simulated provider, and every provider whose key (or base URL) the environment sets.
    let providers =
        match belt::llm::providers_from_env(SimConfig::default().latency_ms(0), |v| std::env::var(v).ok()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("tools: {e}");
                std::process::exit(2);
            }
        };
    let options = RunOptions::default().with_providers(providers);
    let task = Task::new("Should I take a coat in Lisbon today?");
    let result = match belt::run(flow, task, options).await {
        Ok(handle) => handle.result().await,
        Err(e) => {
            eprintln!("tools: {e} (is the model's key set, e.g. OPENAI_API_KEY?)");
            std::process::exit(2);
        }
    };
    println!("steps:");
    for a in &result.agents {
        println!(
            "  {:<32} {:<9} {} tokens",
            a.step.as_str(),
            format!("{:?}", a.status),
            a.outcome.usage.input_tokens + a.outcome.usage.output_tokens
        );
    }
    let cost = if result.simulated {
        format!("${:.6} (simulated)", result.cost_usd)
    } else if result.usage.unpriced_calls > 0 {
        format!("unknown for {} calls (no known price)", result.usage.unpriced_calls)
    } else {
        format!("${:.6}", result.cost_usd)
    };
    println!("\nstatus: {} · {} calls · {cost}", result.status, result.usage.calls);
}

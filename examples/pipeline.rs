//! A sequential pipeline with a fan-out stage, on the simulated provider.
//!
//! `cargo run --example pipeline`
//!
//! outline → expand every point in parallel → a fact check that fails and is skipped →
//! edit. Each stage is fed the previous stage's output; every step is recorded under a
//! deterministic id (`pipeline/02-expand/003`), so a resumed run would replay it.

use belt::patterns::pipeline::{OnError, Pipeline, Stage};
use belt::patterns::{Agent, Flow};
use belt::{LlmRequest, RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

/// An LLM agent whose prompt puts the instruction first and the input after it.
fn writer(instruction: &'static str) -> Agent {
    Agent::request(MODEL, move |input| {
        LlmRequest::new(MODEL, format!("{instruction}\n\n{input}")).max_tokens(300)
    })
}

#[tokio::main]
async fn main() {
    let pipeline = Pipeline::new("pipeline")
        // A recorded step that is not an LLM call: three points to expand.
        .then(
            "outline",
            Agent::map(|topic| Ok(format!("Why {topic} matters\nHow {topic} works\nWhere {topic} is going"))),
        )
        .stage(Stage::each("expand", writer("Expand this point into a paragraph:")))
        .stage(
            Stage::new(
                "fact-check",
                Agent::effect(|_| async { Err("the fact-check service is down".into()) }),
            )
            .on_error(OnError::Skip),
        )
        .then("edit", writer("Edit this draft into a short article:"));

    let flow = Flow::new("pipeline", move |ctx, task| {
        let pipeline = pipeline.clone();
        async move {
            let run = pipeline.run(&ctx, task.description).await.map_err(|e| e.error)?;
            for stage in &run.stages {
                let status = match &stage.status {
                    belt::patterns::pipeline::StageStatus::Completed => "completed".to_string(),
                    belt::patterns::pipeline::StageStatus::Skipped(e) => format!("skipped ({})", e[0]),
                    belt::patterns::pipeline::StageStatus::Recovered(e) => format!("recovered ({})", e[0]),
                    belt::patterns::pipeline::StageStatus::NotTaken => "not taken".to_string(),
                };
                let heading = stage
                    .output
                    .lines()
                    .find(|l| l.starts_with("## "))
                    .or(stage.output.lines().next())
                    .unwrap_or("");
                println!(
                    "{:<24} {status}\n{:<24} → {}",
                    stage.step.as_str(),
                    "",
                    heading.chars().take(70).collect::<String>()
                );
            }
            Ok::<_, StepError>(run.output.to_string())
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result =
        belt::run(flow, Task::new("solar power"), options).await.expect("valid options").result().await;
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
    println!("\n{}", result.final_output.unwrap_or_default());
}

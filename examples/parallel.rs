//! Parallel fan-out / fan-in with required and optional branches, on the simulated provider.
//!
//! `cargo run --example parallel`
//!
//! Three reviewers read the same proposal at once; the style review is optional and its
//! service is down, so it is reported and left out, and the fan-in is told it is missing.
//! Then the same review again with the failing reviewer required: the whole fails.

use belt::patterns::parallel::{Parallel, ParallelError};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

fn review(style_required: bool) -> Parallel {
    let style = Agent::effect(|_| async { Err("the style checker is down".to_string()) });
    let fan = Parallel::new(if style_required { "strict" } else { "review" })
        .required("legal", Agent::llm(MODEL, "You review proposals for legal risk."))
        .required("security", Agent::llm(MODEL, "You review proposals for security risk."));
    let fan = if style_required { fan.required("style", style) } else { fan.optional("style", style) };
    fan.join(Agent::llm(MODEL, "You merge several reviews into one verdict."))
}

#[tokio::main]
async fn main() {
    let flow = Flow::new("parallel", |ctx, task| async move {
        let run = review(false).run(&ctx, task.description.clone()).await.map_err(|e| match e {
            ParallelError::RequiredFailed { error, .. } | ParallelError::JoinFailed { error, .. } => error,
        })?;
        for b in &run.branches {
            let how = if b.required { "required" } else { "optional" };
            match &b.outcome {
                Ok(text) => println!("{:<16} {how:<9} ok ({} bytes)", b.step.as_str(), text.len()),
                Err(e) => println!("{:<16} {how:<9} FAILED: {e}", b.step.as_str()),
            }
        }
        println!(
            "failed optional branches: {:?}\n",
            run.failed_optional().iter().map(|f| f.0).collect::<Vec<_>>()
        );

        match review(true).run(&ctx, task.description).await {
            Err(e) => println!("with `style` required: {e}\n"),
            Ok(_) => println!("with `style` required: unexpectedly succeeded\n"),
        }
        Ok::<_, StepError>(run.output.to_string())
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("Move the billing service to a new cloud region"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!(
        "status: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
    let output = result.final_output.unwrap_or_default();
    println!("\n{}", output.lines().take(6).collect::<Vec<_>>().join("\n"));
}

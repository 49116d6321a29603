//! Iterative refinement, on the simulated provider.
//!
//! `cargo run --example iterative`
//!
//! Two loops on the same task. The first stops on a success predicate (free, no call). The
//! second asks an LLM judge after every draft; the simulated judge never writes `DONE`, so
//! the loop stops at `max_iterations` and the run's record says which cap stopped it and
//! where (a skipped `strict/04/draft`).

use belt::patterns::iterative::Refine;
use belt::patterns::{Agent, Flow};
use belt::{LlmRequest, RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let flow = Flow::new("iterative", |ctx, task| async move {
        let quick = Refine::llm(MODEL)
            .scope("quick")
            .until(|draft| draft.to_lowercase().contains("ownership"))
            .max_iterations(5);
        let done = quick.run(&ctx, task.description.clone()).await.map_err(|e| e.error)?;
        println!("quick:  {} iteration(s); stopped because {}", done.iterations(), done.stop);

        let writer = Agent::request(MODEL, |input| LlmRequest::new(MODEL, input).max_tokens(250));
        let strict = Refine::new(writer.clone(), writer)
            .scope("strict")
            .judge(MODEL, "under 150 words, one concrete code example, no jargon")
            .max_iterations(3);
        let done = strict.run(&ctx, task.description).await.map_err(|e| e.error)?;
        println!("strict: {} iteration(s); stopped because {}", done.iterations(), done.stop);
        for it in &done.history {
            let critique = it.critique.as_deref().map_or(0, str::len);
            println!(
                "  {} → {} bytes; {} judged it ({critique} bytes of critique)",
                it.draft_step.as_str(),
                it.draft.len(),
                it.judge_step.as_ref().map_or("nobody", |s| s.as_str())
            );
        }
        Ok::<_, StepError>(done.output.to_string())
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("Explain ownership and borrowing in Rust"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
    for a in result.agents.iter().filter(|a| a.error.is_some()) {
        println!("  {} {:?}: {}", a.step.as_str(), a.status, a.error.as_deref().unwrap_or(""));
    }
}

//! An orchestrator of orchestrators, on the simulated provider.
//!
//! `cargo run --example conductor`
//!
//! The planner picks phases among three sub-orchestrators — a swarm search, a review by
//! parallel reviewers, and a draft-and-refine writer — and each phase runs in its own StepId
//! scope (`conductor/01-research/worker/002`). The simulated planner writes no real plan,
//! so the conductor falls back to running each sub-orchestrator once, in order.

use belt::patterns::conductor::Conductor;
use belt::patterns::iterative::Refine;
use belt::patterns::parallel::Parallel;
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let review = Agent::new(|ctx, spec, input| async move {
        let reviewers = Parallel::new(spec.id.as_str())
            .required("accuracy", Agent::llm(MODEL, "You check facts."))
            .optional("style", Agent::llm(MODEL, "You check style."))
            .join(Agent::llm(MODEL, "You merge reviews into a list of changes."));
        reviewers.run(&ctx, input).await.map(|r| r.output).map_err(|e| match e {
            belt::patterns::parallel::ParallelError::RequiredFailed { error, .. }
            | belt::patterns::parallel::ParallelError::JoinFailed { error, .. } => error,
        })
    });
    let write = Agent::new(|ctx, spec, input| async move {
        let refine = Refine::llm(MODEL).scope(spec.id.as_str()).max_iterations(2);
        refine.run(&ctx, input).await.map(|r| r.output).map_err(|e| e.error)
    });
    let conductor = Conductor::new(MODEL)
        .swarm("research", "searches news, studies, products and forums in parallel", 4)
        .orchestrator("review", "reviews findings for accuracy and style", review)
        .orchestrator("write", "drafts and refines the final text", write);

    let flow = Flow::new("conductor", move |ctx, task| {
        let conductor = conductor.clone();
        async move {
            let run = conductor
                .run(&ctx, task.description)
                .await
                .map_err(|e| StepError::Failed { step: "conductor".into(), message: e.to_string() })?;
            println!("plan (fallback: {}):", run.fallback);
            for p in &run.phases {
                println!("  {:<24} {} bytes", p.scope.as_str(), p.output.len());
            }
            Ok::<_, StepError>(run.output.to_string())
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("A report on cycling in European cities"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!("\nsteps:");
    for a in &result.agents {
        println!("  {:<40} {:?}", a.step.as_str(), a.status);
    }
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
}

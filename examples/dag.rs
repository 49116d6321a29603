//! A DAG of steps, on the simulated provider.
//!
//! `cargo run --example dag`
//!
//! A business case: market and costs run at once; the slow regulatory review does not hold
//! up pricing; the competitor scan fails, so the node that needs it is skipped while the
//! rest completes. A cyclic graph is rejected, with its path, before any call.

use std::time::Duration;

use belt::patterns::dag::{Dag, NodeOutcome};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let slow = Agent::effect(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok("No licence is needed below 500 bikes.".to_string())
    });
    let dag = Dag::new("dag")
        .node("market", &[], Agent::llm(MODEL, "You size markets."))
        .node("costs", &[], Agent::llm(MODEL, "You estimate costs."))
        .node("regulation", &[], slow)
        .node(
            "competitors",
            &[],
            Agent::effect(|_| async { Err("the market-data API refused the key".to_string()) }),
        )
        .node("pricing", &["market", "costs"], Agent::llm(MODEL, "You set prices."))
        .node("positioning", &["competitors", "pricing"], Agent::llm(MODEL, "You position products."))
        .node("plan", &["pricing", "regulation"], Agent::llm(MODEL, "You write business plans."));
    let cyclic = Dag::new("bad")
        .node("a", &["c"], Agent::llm(MODEL, "a"))
        .node("b", &["a"], Agent::llm(MODEL, "b"))
        .node("c", &["b"], Agent::llm(MODEL, "c"));

    let flow = Flow::new("dag", move |ctx, task| {
        let (dag, cyclic) = (dag.clone(), cyclic.clone());
        async move {
            if let Err(e) = cyclic.run(&ctx, task.description.clone()).await {
                println!("rejected before any call: {e}\n");
            }
            let run = dag.run(&ctx, task.description).await.expect("the graph is valid");
            println!("finished in this order: {}\n", run.finished.join(" → "));
            for node in &run.nodes {
                let how = match &node.outcome {
                    NodeOutcome::Completed(text) => format!("completed ({} bytes)", text.len()),
                    NodeOutcome::Failed(e) => format!("failed: {e}"),
                    NodeOutcome::Skipped { failed_deps } => {
                        format!("skipped: needs {}", failed_deps.join(", "))
                    }
                };
                println!("{:<16} {how}", node.step.as_str());
            }
            Ok::<_, StepError>(run.output("plan").map(|t| t.to_string()).unwrap_or_default())
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(50)));
    let result = belt::run(flow, Task::new("A bicycle-sharing service for Lyon"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
}

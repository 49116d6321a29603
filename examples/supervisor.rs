//! A supervisor routing tasks by capability, on the simulated provider.
//!
//! `cargo run --example supervisor`
//!
//! Four tasks for a small team. The first researcher's tool is broken: its task falls back
//! to another researcher, its record shows the failure, and the next research tasks go to
//! the agents with the better record. A task nobody can do is an error naming the
//! capabilities there are.

use belt::patterns::supervisor::Supervisor;
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let broken = Agent::effect(|_| async { Err("the search tool returned HTTP 503".to_string()) });
    let team = Supervisor::new("team")
        .agent("ada", &["research"], broken)
        .agent(
            "grace",
            &["research", "writing"],
            Agent::llm(MODEL, "You are a careful researcher and writer."),
        )
        .agent("linus", &["research"], Agent::llm(MODEL, "You are a fast researcher."))
        .agent("edsger", &["review"], Agent::llm(MODEL, "You review reports."));

    let flow = Flow::new("supervisor", move |ctx, _task| {
        let team = team.clone();
        async move {
            let tasks = [
                ("churn", "research", "What drives customer churn in Q3?"),
                ("pricing", "research", "How do competitors price their plans?"),
                ("report", "writing", "Write the quarterly report."),
                ("legal", "contracts", "Check the reseller contract."),
            ];
            let mut done = Vec::new();
            for (id, capability, text) in tasks {
                match team.assign(&ctx, id, capability, text).await {
                    Ok(a) => {
                        let before: Vec<String> =
                            a.failed.iter().map(|f| format!("{} failed", f.agent)).collect();
                        println!("{id:<8} {capability:<10} → {:<6} {}", a.agent, before.join(", "));
                        done.push(a.step.to_string());
                    }
                    Err(e) => println!("{id:<8} {capability:<10} → error: {e}"),
                }
            }
            println!("\nrecords:");
            for s in team.stats() {
                println!(
                    "  {:<7} {:<20} {} ok, {} failed",
                    s.name,
                    s.capabilities.join(","),
                    s.successes,
                    s.failures
                );
            }
            Ok::<_, StepError>(done.join("\n"))
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result =
        belt::run(flow, Task::new("quarterly work"), options).await.expect("valid options").result().await;
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
}

//! Dynamic agents, on the simulated provider.
//!
//! `cargo run --example dynamic`
//!
//! The model designs a team of four agents for the task (name, role, system prompt); each
//! works on the task from its role, in parallel, and a synthesis merges their work. Agents
//! are kept by name for the rest of the run.

use belt::patterns::dynamic::Dynamic;
use belt::{RunOptions, SimConfig, Task};

#[tokio::main]
async fn main() {
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(
        Dynamic::new(4, "simulated/default"),
        Task::new("Make a mid-sized city car-free by 2035"),
        options,
    )
    .await
    .expect("valid options")
    .result()
    .await;
    println!("the team the model designed:");
    for s in &result.plan {
        println!("  {:<28} {}", s.specialization, s.description);
    }
    println!("\nsteps:");
    for a in &result.agents {
        println!("  {:<16} {:<12} {:?}", a.step.as_str(), a.tier.as_str(), a.status);
    }
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
    let output = result.final_output.unwrap_or_default();
    println!("\n{}", output.lines().take(8).collect::<Vec<_>>().join("\n"));
}

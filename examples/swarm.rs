//! A swarm of specialist searchers, on the simulated provider.
//!
//! `cargo run --example swarm`
//!
//! The task is split into subtasks (here a given plan, so the domains are easy to follow);
//! each subtask gets a specialist type by its keywords — news, academic, technical,
//! product, social, image, video, text or general — and a prompt for that type. The final
//! output groups the results by domain and leaves out what an earlier result already said.
//! `Swarm::new(n, model)` without a plan decomposes the task itself, like the cascade.

use belt::patterns::swarm::Swarm;
use belt::{RunOptions, SimConfig, Subtask, Task};

#[tokio::main]
async fn main() {
    let plan = vec![
        Subtask::new("1", "Latest news on e-bike subsidies announced this week"),
        Subtask::new("2", "Peer-reviewed studies of cycling injury rates"),
        Subtask::new("3", "Compare prices of cargo bikes from three brands"),
        Subtask::new("4", "What Reddit forums say about bike lanes: public sentiment"),
        Subtask::new("5", "How to configure the city's open-data API for bike counts"),
        Subtask::new("6", "YouTube videos and talks on Dutch cycling design"),
    ];
    let options = RunOptions::default()
        .with_providers(belt::providers(SimConfig::default().latency_ms(20)))
        .with_plan(plan);
    let result = belt::run(Swarm::new(6, "simulated/default"), Task::new("Cycling in cities"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    for s in &result.plan {
        println!("{:<10} {}", belt::patterns::swarm::domain_of(s), s.description);
    }
    println!("\nstatus: {} · {} calls · ${:.4}\n", result.status, result.usage.calls, result.cost_usd);
    let output = result.final_output.unwrap_or_default();
    for line in output.lines().filter(|l| l.starts_with("## ") || l.starts_with("### ")) {
        println!("{line}");
    }
    let raw: usize = result.agents.iter().filter_map(|a| a.output.as_ref()).map(|o| o.len()).sum();
    println!("\n{raw} bytes of results; {} once grouped, with repeated paragraphs left out", output.len());
}

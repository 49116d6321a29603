//! Load balancing, a priority queue and batching, on the simulated provider.
//!
//! `cargo run --example balance`
//!
//! Six summaries spread over two summarizers by load; a work queue where an urgent ticket
//! pushed late jumps ahead of the others; and 10 reviews classified in batches of 4.

use std::time::Duration;

use belt::patterns::balance::{LoadBalancer, WorkQueue, run_batches};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let flow = Flow::new("balance", |ctx, _task| async move {
        // 1. Least-loaded capable agent.
        let pool = LoadBalancer::new("pool")
            .agent("fast", &["summarize"], Agent::llm(MODEL, "You summarize in one line."))
            .agent("thorough", &["summarize", "translate"], Agent::llm(MODEL, "You summarize carefully."))
            .agent("translator", &["translate"], Agent::llm(MODEL, "You translate."));
        let docs: Vec<String> = (1..=6).map(|i| format!("doc-{i}")).collect();
        let runs: Vec<_> =
            docs.iter().map(|d| pool.run(&ctx, d, "summarize", format!("Summarize {d}"))).collect();
        for r in ctx.all(runs).await {
            let r = r.map_err(|e| StepError::Failed { step: "pool".into(), message: e.to_string() })?;
            println!("{:<24} by {}", r.step.as_str(), r.agent);
        }
        println!("load (agent, in flight, assigned): {:?}\n", pool.load());

        // 2. Priority: higher first, FIFO within a priority; producers push while it runs.
        let queue = WorkQueue::new("tickets");
        for (id, priority) in [("printer", 1), ("vpn", 5), ("laptop", 5), ("badge", 2)] {
            queue.push(id, priority, format!("Ticket: {id}"));
        }
        let producer = {
            let queue = queue.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                queue.push("outage", 100, "Ticket: the site is down");
                queue.close();
            }
        };
        let agent = Agent::llm(MODEL, "You answer IT tickets.");
        let (done, ()) = tokio::join!(queue.run(&ctx, 1, &agent), producer);
        let order: Vec<String> = done.done.iter().map(|d| format!("{} (p{})", d.id, d.priority)).collect();
        println!("tickets handled in order: {}\n", order.join(" → "));

        // 3. Batches of 4.
        let reviews: Vec<String> = (1..=10).map(|i| format!("Review {i}: the product is fine")).collect();
        let classify = Agent::llm(MODEL, "Classify each numbered review as positive or negative.");
        for item in run_batches(&ctx, "batch", &reviews, 4, &classify).await {
            let answer = match &item.outcome {
                Ok(text) => text.lines().next().unwrap_or("").chars().take(50).collect::<String>(),
                Err(e) => format!("failed: {e}"),
            };
            println!("review {:>2} ({}) → {answer}", item.index + 1, item.batch.as_str());
        }
        Ok::<_, StepError>(String::new())
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("balance"), options).await.expect("valid options").result().await;
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
}

//! A saga with compensations, on the simulated provider.
//!
//! `cargo run --example saga`
//!
//! Booking a trip: flight, hotel, a drafted confirmation (an LLM step), then payment,
//! which fails. The completed steps are compensated in reverse order; the hotel's
//! cancellation fails too, is recorded, and the flight is still cancelled.

use belt::patterns::saga::Saga;
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

fn booking(what: &'static str, reference: &'static str) -> Agent {
    Agent::effect(move |_| async move { Ok(format!("{what} booked: {reference}")) })
}

#[tokio::main]
async fn main() {
    let trip = Saga::new("trip")
        .step(
            "flight",
            booking("flight", "AF1234"),
            Agent::effect(|booked| async move { Ok(format!("cancelled ({booked})")) }),
        )
        .step(
            "hotel",
            booking("hotel", "H-77"),
            Agent::effect(|_| async { Err("the hotel's API timed out; cancel by phone".to_string()) }),
        )
        .step_final("confirmation", Agent::llm(MODEL, "You write a short trip confirmation."))
        .step(
            "payment",
            Agent::effect(|_| async { Err("card declined".to_string()) }),
            Agent::effect(|_| async { Ok("refunded".to_string()) }),
        );

    let flow = Flow::new("saga", move |ctx, task| {
        let trip = trip.clone();
        async move {
            match trip.run(&ctx, task.description).await {
                Ok(done) => Ok(done.output.to_string()),
                Err(failed) => {
                    println!("{failed}\n");
                    println!("completed before the failure:");
                    for d in &failed.completed {
                        println!("  {:<24} {}", d.step.as_str(), d.output.lines().next().unwrap_or(""));
                    }
                    println!("compensations, in the order they ran:");
                    for c in &failed.compensations {
                        match &c.result {
                            Ok(text) => println!("  {:<32} ok: {text}", c.step.as_str()),
                            Err(e) => println!("  {:<32} FAILED: {e}", c.step.as_str()),
                        }
                    }
                    Ok::<_, StepError>(format!("Trip not booked: {failed}"))
                }
            }
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("Lyon, three nights in May"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!(
        "\nstatus: {} ({}) · {} calls · ${:.4}",
        result.status, result.stop_reason, result.usage.calls, result.cost_usd
    );
}

//! Conditional routing, on the simulated provider.
//!
//! `cargo run --example router`
//!
//! Four support tickets, each routed in its own scope (`ticket/2/classify`,
//! `ticket/2/billing`): by a value from the context, by predicates, by an LLM classifier
//! over the agents' descriptions (with a fallback), and by a value that names no route —
//! an error that lists the valid ones. (The simulated provider writes placeholder text,
//! not a classification, so its classifier names no route and the fallback takes over;
//! a real model answers with a name.)

use belt::patterns::router::{Choose, Router};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let desk = Router::new("desk")
        .route(
            "billing",
            "invoices, refunds, double charges and payments",
            Agent::llm(MODEL, "You are the billing desk."),
        )
        .route_when(
            "outage",
            "the service is down or unreachable",
            |t| t.to_lowercase().contains("down"),
            Agent::llm(MODEL, "You are the on-call engineer."),
        )
        .route("general", "anything else", Agent::llm(MODEL, "You are the help desk."))
        .fallback("general");

    let flow = Flow::new("router", move |ctx, _task| {
        let desk = desk.clone();
        async move {
            let tickets = [
                (
                    Choose::Value("billing".into()),
                    "The customer picked 'billing' in the form: refund my order",
                ),
                (Choose::Predicate, "The dashboard is down since 9am"),
                (Choose::Llm(MODEL.into()), "I was charged twice for the same invoice"),
                (Choose::Value("sales".into()), "Can I get a quote for 40 seats?"),
            ];
            let mut answers = Vec::new();
            for (i, (choose, ticket)) in tickets.into_iter().enumerate() {
                let how = format!("{choose:?}");
                match desk.in_scope(format!("ticket/{}", i + 1)).run(&ctx, choose, ticket).await {
                    Ok(routed) => {
                        println!(
                            "ticket {}: {how:<26} → {:<8} ({:?})",
                            i + 1,
                            routed.route,
                            short(&routed.by)
                        );
                        answers.push(format!("ticket {} → {}", i + 1, routed.route));
                    }
                    Err(e) => println!("ticket {}: {how:<26} → error: {e}", i + 1),
                }
            }
            Ok::<_, StepError>(answers.join("\n"))
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result =
        belt::run(flow, Task::new("support desk"), options).await.expect("valid options").result().await;
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
    println!("{}", result.final_output.unwrap_or_default());
}

fn short(by: &belt::patterns::router::RoutedBy) -> String {
    use belt::patterns::router::RoutedBy;
    match by {
        RoutedBy::Classifier { step, .. } => format!("classified by {step}"),
        RoutedBy::Fallback { reason } => format!("fallback: {}", reason.chars().take(60).collect::<String>()),
        other => format!("{other:?}"),
    }
}

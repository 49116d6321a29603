//! Event-driven agents, on the simulated provider.
//!
//! `cargo run --example event_driven`
//!
//! Handlers subscribe to order events; the two handlers of `order.created` run in parallel.
//! The queue holds 4 events, so the producer waits when it is full. Then a drain with a
//! 300 ms deadline: what is queued is handled until the deadline, and the report names the
//! events dropped and the handlers cancelled.

use std::time::Duration;

use belt::patterns::event_driven::{Reactor, Shutdown};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    // A slow, non-LLM handler: an export to a warehouse system that takes 200 ms.
    let export = Agent::effect(|order| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(format!("exported {order}"))
    });
    let reactor = Reactor::new("events")
        .capacity(4)
        .on("order.created", "invoice", Agent::llm(MODEL, "You write invoices."))
        .on("order.created", "welcome", Agent::llm(MODEL, "You write welcome emails."))
        .on("order.shipped", "export", export)
        .on("order.cancelled", "refund", Agent::llm(MODEL, "You write refund notes."));

    let flow = Flow::new("event_driven", move |ctx, _task| {
        let reactor = reactor.clone();
        async move {
            let (publisher, inbox) = reactor.channel();
            let producer = async {
                let events = [
                    ("order.created", "order 1: two chairs"),
                    ("order.created", "order 2: a table"),
                    ("order.paid", "order 1"),
                    ("order.cancelled", "order 2"),
                    ("order.shipped", "order 1"),
                    ("order.shipped", "order 3"),
                    ("order.shipped", "order 4"),
                ];
                for (kind, payload) in events {
                    publisher.publish(kind, payload).await.expect("queued");
                }
                println!("producer: all 7 events queued; asking for a drain with a 300 ms deadline");
                publisher.shutdown(Shutdown::Drain(Duration::from_millis(300)));
                if let Err(e) = publisher.try_publish("order.created", "order 5") {
                    println!("producer: after the shutdown: {e}");
                }
            };
            let (report, ()) = tokio::join!(reactor.run(&ctx, inbox), producer);
            println!();
            for h in &report.handled {
                println!("handled   #{} {:<16} by {:<8} ({})", h.seq, h.kind, h.handler, h.step.as_str());
            }
            for (seq, kind) in &report.unhandled {
                println!("unhandled #{seq} {kind} (no subscriber)");
            }
            for (seq, handler) in &report.cancelled {
                println!("cancelled #{seq} handler {handler} (still running at the deadline)");
            }
            for (seq, kind) in &report.dropped {
                println!("dropped   #{seq} {kind} (still queued at the deadline)");
            }
            Ok::<_, StepError>(format!("{} handler runs", report.handled.len()))
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(40)));
    let result = belt::run(flow, Task::new("orders"), options).await.expect("valid options").result().await;
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
}

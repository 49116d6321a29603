//! A blackboard shared by agents, on the simulated provider.
//!
//! `cargo run --example blackboard`
//!
//! A researcher, a planner and a critic work on one board in rounds: each is woken when a
//! key it watches changes, and writes its own key. An observer task holds a subscription to
//! `plan` and prints every new version. The critic approves the revised plan; the planner,
//! woken by the approval, writes a last version, which the critic approves again: an
//! unchanged value wakes nobody, so the session settles.

use belt::patterns::blackboard::{Blackboard, Contributor, Session};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let flow = Flow::new("blackboard", |ctx, task| async move {
        let board = Blackboard::new();
        board.set("question", task.description);
        let mut plans = board.subscribe(&["plan"]);
        let observer = {
            let board = board.clone();
            tokio::spawn(async move {
                loop {
                    plans.changed().await;
                    println!("  observer: plan is now at version {}", board.version("plan"));
                }
            })
        };
        // The critic (a rule, not a model) approves the plan once it has been revised.
        let seen = board.clone();
        let critic = Agent::map(move |_plan| {
            Ok(if seen.version("plan") >= 2 {
                "approved".into()
            } else {
                "Too vague: add a timeline.".into()
            })
        });
        let reviser = Agent::request(MODEL, |input| {
            belt::LlmRequest::new(MODEL, format!("Revised plan, from these notes:\n\n{input}"))
                .max_tokens(200)
        });
        let session = Session::new("board", board.clone())
            .contributor(Contributor::new(
                "researcher",
                &["question"],
                "facts",
                Agent::llm(MODEL, "You gather facts."),
            ))
            .contributor(Contributor::new("planner", &["facts", "critique"], "plan", reviser))
            .contributor(Contributor::new("critic", &["plan"], "critique", critic))
            .max_rounds(8);
        let run = session.run(&ctx).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await; // let the observer print
        observer.abort();
        for a in &run.activations {
            println!("round {} {:<20} woken by {:?}", a.round, a.step.as_str(), a.woken_by);
        }
        println!("settled after {} rounds (cap: {:?})", run.rounds, run.cap.map(|c| c.to_string()));
        println!("critique: {}", board.get("critique").unwrap_or_default());
        Ok::<_, StepError>(board.get("plan").unwrap_or_default().to_string())
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("Where should the city put its new bike depot?"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
}

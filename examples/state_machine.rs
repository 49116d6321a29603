//! A state machine with guarded transitions and actions, on the simulated provider.
//!
//! `cargo run --example state_machine`
//!
//! An article moves draft → review → (draft again, or) approved → published. The guards
//! check the text; the actions are LLM steps that rewrite it. A transition that does not
//! exist, and one whose guard refuses, are errors naming both states.

use belt::patterns::state_machine::{StateMachine, Transition};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, Task};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let article = StateMachine::new("article", "draft")
        .transition(
            Transition::new("draft", "review")
                .guard("long enough", |text| text.split_whitespace().count() >= 5)
                .action(Agent::llm(MODEL, "You turn notes into a first draft.")),
        )
        .transition(Transition::new("review", "draft").guard("needs work", |text| text.contains("TODO")))
        .transition(
            Transition::new("review", "approved")
                .action(Agent::llm(MODEL, "You copy-edit a draft for publication.")),
        )
        .transition(
            Transition::new("approved", "published").guard("has a heading", |text| text.contains("## ")),
        )
        .final_state("published")
        .max_transitions(10);

    let flow = Flow::new("state_machine", move |ctx, task| {
        let article = article.clone();
        async move {
            let mut m = article.start("bikes");
            // Too short for review: the guard refuses, the machine stays in `draft`.
            if let Err(e) = m.go(&ctx, "review").await {
                println!("refused: {e}");
            }
            if let Err(e) = m.go(&ctx, "published").await {
                println!("refused: {e}");
            }
            let mut m = article.start(task.description);
            m.run(&ctx)
                .await
                .map_err(|e| StepError::Failed { step: "article".into(), message: e.to_string() })?;
            println!("\nfinal state: {}", m.state());
            for t in m.history() {
                let step = t.step.as_ref().map_or("-".to_string(), |s| s.to_string());
                let guard = t.guard.as_deref().unwrap_or("-");
                println!("  {}. {:<9} → {:<10} guard: {guard:<14} action step: {step}", t.seq, t.from, t.to);
            }
            Ok::<_, StepError>(m.data().to_string())
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let task = Task::new("Notes: cities with shared bikes see fewer short car trips and cleaner air");
    let result = belt::run(flow, task, options).await.expect("valid options").result().await;
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
}

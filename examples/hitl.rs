//! Human in the loop over Rust channels, on the simulated provider.
//!
//! `cargo run --example hitl`
//!
//! The run drafts a press release, then asks three questions at once: a headline to
//! choose, a quote to type, and an approval to publish. A simulated person (a task reading
//! the requests) answers the second question first, then the first, tries an unknown id,
//! and never answers the approval, which times out to its default (do not publish).

use std::time::Duration;

use belt::patterns::hitl::{self, Answer, Question};
use belt::patterns::{Agent, Flow};
use belt::{RunOptions, SimConfig, StepError, StepSpec, Task, Tier};

const MODEL: &str = "simulated/default";

#[tokio::main]
async fn main() {
    let (human, mut requests) = hitl::channel();

    // The person: answers in their own order, on their own time.
    let person = tokio::spawn(async move {
        let mut open = Vec::new();
        for _ in 0..3 {
            let r = requests.recv().await.expect("a request");
            println!(
                "person: got {} ({:?}, timeout {:?}, default {:?})",
                r.id, r.question, r.timeout, r.default
            );
            open.push(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for r in open.iter().rev() {
            let answer = match &r.question {
                Question::Input => Answer::Text("\"Fewer cars, cleaner air.\" — the mayor".into()),
                Question::Select { options } => {
                    println!("person: choosing {:?}", options[1]);
                    Answer::Select(1)
                }
                Question::Approval => continue, // never answered: it will time out
            };
            requests.answer(&r.id, answer).expect("an open request");
        }
        if let Err(e) = requests.answer("press:hitl/nothing", Answer::Approve(true)) {
            println!("person: {e}");
        }
    });

    let flow = Flow::new("hitl", move |ctx, task| {
        let human = human.clone();
        async move {
            let writer = Agent::llm(MODEL, "You write press releases.");
            let draft = writer.run(&ctx, StepSpec::new("draft", Tier::Agent), task.description).await?;
            let headlines =
                vec!["Bikes for all".to_string(), "The city rolls on".into(), "Pedal power".into()];
            let (headline, quote, publish) = tokio::join!(
                human.select(
                    &ctx,
                    "headline",
                    "Which headline?",
                    headlines.clone(),
                    Duration::from_secs(5),
                    0
                ),
                human.input(&ctx, "quote", "A quote for the release?", Duration::from_secs(5), "(no quote)"),
                human.approve(&ctx, "publish", "Publish now?", Duration::from_millis(500), false),
            );
            let (headline, quote, publish) = (headline?, quote?, publish?);
            println!("\nheadline: {:?} ({:?})", headlines[headline.value], headline.by);
            println!("quote:    {:?} ({:?})", quote.value, quote.by);
            println!("publish:  {} ({:?}, id {})", publish.value, publish.by, publish.id);
            Ok::<_, StepError>(format!("# {}\n\n{}\n\n{draft}", headlines[headline.value], quote.value))
        }
    });
    let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(20)));
    let result = belt::run(flow, Task::new("The city's new bike-sharing scheme"), options)
        .await
        .expect("valid options")
        .result()
        .await;
    person.await.expect("the person");
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
}

//! A custom orchestrator in three methods, run on the simulated provider.
//!
//! `cargo run --example custom_orchestrator`
//!
//! It plans a fixed three-step study where the last step depends on the first two,
//! asks the model for each step, and writes its own synthesis. Every LLM call goes through
//! `ctx.llm`, so retries, timeouts, budget, concurrency, events and recording come from the
//! engine; the orchestrator holds only the logic of the task.

use async_trait::async_trait;
use belt::{
    AgentOutput, Ctx, LlmRequest, Orchestrator, Outcome, Plan, RunOptions, SimConfig, StepError, StepSpec,
    Subtask, Synthesis, Task, Tier,
};

struct Study {
    model: String,
}

#[async_trait]
impl Orchestrator for Study {
    fn name(&self) -> &str {
        "study"
    }

    async fn decompose(&self, _ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        // A fixed plan; a real one could ask the model (see the cascade).
        let t = &task.description;
        Ok(vec![
            Subtask::new("evidence", format!("Collect the evidence on {t}")).specialization("researcher"),
            Subtask::new("costs", format!("Estimate the costs of {t}"))
                .specialization("economist")
                .priority(5),
            Subtask::new("advice", format!("Recommend what to do about {t}"))
                .specialization("advisor")
                .depends_on(&["evidence", "costs"]),
        ]
        .into())
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        // `brief()`: the task with the run's context under it; `details()`: the subtask's
        // agent type and context, when the plan gives them.
        let mut prompt = format!(
            "Task: {}\nSubtask {}: {}\n{}",
            task.brief(),
            subtask.id,
            subtask.description,
            subtask.details()
        );
        for d in deps {
            prompt.push_str(&format!("\nFrom {}:\n{}\n", d.subtask_id, d.text));
        }
        let reply = ctx.llm(step.clone(), LlmRequest::new(&self.model, prompt).max_tokens(400)).await?;
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        _plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let mut prompt = format!("Task: {}\nWrite a one-page brief from these findings.\n", task.description);
        for r in results.iter().flatten() {
            prompt.push_str(&format!("\n### {}\n{}\n", r.subtask_id, r.text));
        }
        let reply =
            ctx.llm(StepSpec::new("brief", Tier::Executive), LlmRequest::new(&self.model, prompt)).await?;
        Ok(Synthesis { text: reply.text.to_string() })
    }
}

#[tokio::main]
async fn main() {
    let options =
        RunOptions::default().with_providers(belt::providers(SimConfig::default().seed(1).latency_ms(50)));
    let study = Study { model: "simulated/default".into() };
    let mut handle =
        belt::run(study, Task::new("four-day work weeks"), options).await.expect("valid options");
    let mut events = handle.events().expect("events");
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Some(step) = &e.step {
                println!("{:>3} {:<16} {}", e.seq, e.kind.type_name(), step);
            }
        }
    });
    let result = handle.result().await;
    printer.await.expect("printer");
    println!("\nstatus: {} · {} calls · ${:.4}", result.status, result.usage.calls, result.cost_usd);
    println!("\n{}", result.final_output.unwrap_or_default());
}

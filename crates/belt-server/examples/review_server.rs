//! A custom orchestrator served by belt-server: a pattern of the HTTP API and its own MCP tool.
//!
//! ```text
//! cargo run -p belt-server --example review_server      # http://127.0.0.1:7701, token `example-token`
//! curl -s -H 'Authorization: Bearer example-token' http://127.0.0.1:7701/v1/patterns
//! curl -s -H 'Authorization: Bearer example-token' -H 'Content-Type: application/json' \
//!      -d '{"task": "Our launch plan: …", "pattern": "review", "args": {"focus": ["risks", "costs"]}}' \
//!      http://127.0.0.1:7701/v1/runs
//! ```
//!
//! MCP clients connected to `http://127.0.0.1:7701/mcp` see the tool `orchestrate_review`,
//! whose arguments are `task` (and the run settings `model`, `budget_usd`…) beside the fields
//! of [`ReviewArgs`], described by their doc comments.
//!
//! `review` asks one reviewer per focus to critique the task's text, in parallel, then a
//! chair merges their notes. It speaks as it goes: `debug` with the panel, `agent_progress`
//! as each reviewer finishes, and `review_required` when the chair's review is ready —
//! custom events that SSE, webhooks, MCP progress and the store carry like the engine's.
//! Set `BELT_ADDR` and `BELT_API_TOKEN` to listen elsewhere with another token.

use std::sync::Arc;

use async_trait::async_trait;
use belt_app::patterns::Team;
use belt_core::{
    AgentOutput, Ctx, LlmRequest, Orchestrator, Outcome, Plan, StepError, StepSpec, Subtask, Synthesis, Task,
    Tier,
};
use belt_server::{Server, ServerConfig};
use serde_json::json;

/// The arguments of `review` (the spec's `args`; the MCP tool's own arguments).
/// (MCP clients may send a number typed in a form as a string: `lenient` takes both.)
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = belt_app::lenient::plain_optionals)]
pub struct ReviewArgs {
    /// What the reviewers look at, one reviewer per entry, e.g. ["risks", "costs", "clarity"].
    pub focus: Vec<String>,
    /// How many points the chair's merged review keeps at most, 1 to 50 (default 5).
    #[serde(default, deserialize_with = "belt_app::lenient::number")]
    pub max_points: Option<u32>,
}

/// A panel of reviewers and a chair.
pub struct Review {
    focus: Vec<String>,
    max_points: u32,
    model: String,
}

#[async_trait]
impl Orchestrator for Review {
    fn name(&self) -> &str {
        "review"
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        ctx.emit("debug", json!({"reviewers": self.focus}));
        let text = &task.description;
        Ok(self
            .focus
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Subtask::new((i + 1).to_string(), format!("Review this text for {f}:\n\n{text}"))
                    .specialization(f)
            })
            .collect::<Vec<_>>()
            .into())
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        _task: &Task,
        subtask: &Subtask,
        _deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let request = LlmRequest::new(&self.model, subtask.description.clone())
            .system(format!(
                "You review texts for {}. List concrete problems, most serious first.",
                subtask.specialization
            ))
            .max_tokens(500);
        let reply = ctx.llm(step.clone(), request).await?;
        let words = reply.text.split_whitespace().count();
        ctx.emit(
            "agent_progress",
            json!({"reviewer": subtask.specialization, "step": step.id, "words": words}),
        );
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        _plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let mut prompt = format!(
            "Merge these reviews of the text below into one review of at most {} points, most serious first.\n\n\
             Text:\n{}\n",
            self.max_points, task.description
        );
        for r in results.iter().flatten() {
            prompt.push_str(&format!("\n### Review {}\n{}\n", r.subtask_id, r.text));
        }
        let reply =
            ctx.llm(StepSpec::new("chair", Tier::Executive), LlmRequest::new(&self.model, prompt)).await?;
        let reviewed = results.iter().filter(|r| r.is_ok()).count();
        ctx.emit("review_required", json!({"step": "chair", "reviews_merged": reviewed}));
        Ok(Synthesis { text: reply.text.to_string() })
    }
}

/// Register `review` on `server`: its HTTP pattern and its MCP tool `orchestrate_review`.
pub fn register(server: &Server) -> Result<(), belt_app::AppError> {
    server.register(
        "review",
        "A panel of reviewers, one per focus, critiques a text in parallel; a chair merges their notes into \
         one review, most serious points first. Give the text as the task.",
        |args: ReviewArgs, team: &Team| {
            let mut focus: Vec<String> = Vec::new();
            for f in args.focus.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
                if !focus.iter().any(|g| g == f) {
                    focus.push(f.to_string());
                }
            }
            if focus.is_empty() {
                return Err("focus: name at least one thing to review, e.g. [\"risks\"]".into());
            }
            let max_points = args.max_points.unwrap_or(5);
            if !(1..=50).contains(&max_points) {
                return Err(format!("max_points: {max_points} is not from 1 to 50"));
            }
            Ok(Arc::new(Review { focus, max_points, model: team.models.worker.clone() }))
        },
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BELT_ADDR").unwrap_or_else(|_| "127.0.0.1:7701".into());
    let token = std::env::var("BELT_API_TOKEN").unwrap_or_else(|_| "example-token".into());
    let app = Arc::new(belt_app::App::new(belt_app::Config::default()));
    let store = Arc::new(belt_core::MemoryStore::new());
    let mut config = ServerConfig::new(token.clone());
    // Offline unless a request names a model of a provider whose key is set.
    config.defaults.model = Some(belt_app::SIMULATED_MODEL.into());
    let server = Server::new(config, app, store);
    register(&server)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("serving `review` on http://{addr} (token {token}); its MCP tool is orchestrate_review at /mcp");
    server.serve(listener, async { tokio::signal::ctrl_c().await.unwrap_or_default() }).await?;
    Ok(())
}

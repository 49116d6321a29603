//! belt-core: the engine of belt, a multi-agent LLM orchestration framework.
//!
//! A run is ordinary async Rust that calls its context, [`Ctx`], for every piece of work
//! that costs money or has effects. Each call has a deterministic [`StepId`]; the context
//! enforces, once for every pattern, the run's concurrency limit, per-step timeouts,
//! retries with backoff, the budget (reserved before each call, so a cap is never
//! exceeded), events, and recording in a [`RunStore`] so a resumed run never pays twice.
//!
//! This crate knows nothing of HTTP, SQL or files: providers come in through
//! [`LlmProvider`] (implemented in `belt-llm`), storage through [`RunStore`].
//!
//! ```
//! use std::sync::Arc;
//! use belt_core::{run, Cascade, RunOptions, RunStatus, Task};
//! use belt_core::testing::ScriptedProvider;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Twelve workers, two synthesizers and an executive, on a test provider.
//! let options = RunOptions::default().with_provider(Arc::new(ScriptedProvider::new("echo")));
//! let handle = run(Cascade::new(12, "echo/model"), Task::new("Impact of AI on healthcare"), options)
//!     .await
//!     .expect("valid options");
//! let result = handle.result().await;
//! assert_eq!(result.status, RunStatus::Completed);
//! assert_eq!(result.shape, vec![12, 2, 1]);
//! # }
//! ```

pub mod budget;
pub mod caps;
pub mod clock;
pub mod ctx;
pub mod effect;
pub mod event;
pub mod hints;
pub mod human;
pub mod limits;
pub mod llm;
pub mod load;
pub mod metrics;
pub mod orchestrator;
pub mod patterns;
pub mod plan;
pub mod policy;
pub mod reply;
pub mod result;
pub mod run;
pub mod schema;
pub mod shared;
pub mod step;
pub mod store;
pub mod testing;
pub mod tool;
pub mod tools;
pub mod usage;
pub mod words;

pub use budget::Budget;
pub use ctx::{Ctx, StepError, Stop};
pub use event::{Event, EventKind, EventStream, PlanSource};
pub use llm::{CallHints, CallKind, LlmError, LlmProvider, LlmReply, LlmRequest, Price, Providers, Usage};
pub use orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis, combine_outputs};
pub use patterns::{Agent, CapHit, Cascade, Dynamic, Flow, Strategy, Swarm, SynthesizeMode};
pub use plan::{PlanError, Subtask, Task};
pub use policy::{Effect, EffectError};
pub use policy::{Policies, StepPolicy};
pub use reply::{StepOutcome, StepReply};
pub use result::{
    AgentRecord, AgentStatus, AgentTotals, Document, RunResult, RunStatus, Segment, UsageTotals, agent_totals,
};
pub use result::{Degradation, DegradeKind};
pub use run::{DocumentWriter, RunControl, RunError, RunHandle, RunOptions, run};
pub use schema::OutputSchema;
pub use step::{StepId, StepSpec, Tier};
pub use store::{MemoryStore, RunStore};
pub use tools::{Source, Tool, ToolOutcome, ToolOutput, Toolbox, Tools};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod time_limits_tests;

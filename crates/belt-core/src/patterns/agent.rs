//! [`Agent`]: the unit of work every pattern runs as a step — text in, text out.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ctx::{Ctx, StepError};
use crate::llm::{LlmRequest, ModelName};
use crate::step::StepSpec;

/// What an agent's run returns.
pub type AgentFuture = BoxFuture<'static, Result<Arc<str>, StepError>>;

type RunFn = dyn Fn(Ctx, StepSpec, Arc<str>) -> AgentFuture + Send + Sync;

/// Something that turns an input text into an output text as one step of a run: an LLM
/// call with a role ([`Agent::llm`]), a call built from the input ([`Agent::request`]), a
/// recorded effect ([`Agent::effect`]), or any async function over the context
/// ([`Agent::new`]). Patterns decide the StepId; the agent decides what the step does.
///
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Agent {
    run: Arc<RunFn>,
    /// The model its calls use, when known (named in skip records).
    model: Arc<str>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("model", &self.model).finish_non_exhaustive()
    }
}

impl Agent {
    /// Any async function of the context, the step to run as, and the input. Use the
    /// step's spec for the work it records ([`Ctx::llm`], [`Ctx::step`]); sub-steps can be
    /// named with `spec.id.child(..)`.
    pub fn new<F, Fut>(f: F) -> Agent
    where
        F: Fn(Ctx, StepSpec, Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<str>, StepError>> + Send + 'static,
    {
        Agent { run: Arc::new(move |ctx, spec, input| f(ctx, spec, input).boxed()), model: Arc::from("") }
    }

    /// An LLM agent: `model` (`provider/model`) playing `role` (its system prompt), given
    /// the input as the user message.
    pub fn llm(model: impl ModelName, role: impl Into<String>) -> Agent {
        let model = model.into_model();
        let role: Arc<str> = Arc::from(role.into());
        let m = model.clone();
        Agent::request(model, move |input| LlmRequest::new(&m, input).system(&*role))
    }

    /// An LLM agent whose request is built from the input (prompt templates, `max_tokens`,
    /// JSON mode…). `model` names the model in records of steps that did not run.
    pub fn request(
        model: impl ModelName,
        build: impl Fn(&str) -> LlmRequest + Send + Sync + 'static,
    ) -> Agent {
        let build = Arc::new(build);
        Agent {
            run: Arc::new(move |ctx: Ctx, spec, input: Arc<str>| {
                let request = build(&input);
                async move { ctx.llm(spec, request).await.map(|r| r.text) }.boxed()
            }),
            model: model.into_model(),
        }
    }

    /// A recorded effect that is not an LLM call (an API call, a write, a tool): it runs
    /// once per run through [`Ctx::step`], keyed by its input; on resume its recorded
    /// output is returned. An `Err` fails the step with that message.
    pub fn effect<F, Fut>(f: F) -> Agent
    where
        F: Fn(Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let f = Arc::new(f);
        Agent::new(move |ctx, spec, input| {
            let work = f(input.clone());
            async move { ctx.step::<String, _>(spec, &&*input, work).await.map(Arc::from) }
        })
    }

    /// A pure transformation of the text, recorded like an [`Agent::effect`].
    pub fn map(f: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static) -> Agent {
        let f = Arc::new(f);
        Agent::effect(move |input| {
            let out = f(&input);
            async move { out }
        })
    }

    /// The model this agent calls, or `""` when it is not a plain LLM agent.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Name the model this agent calls (shown in records of its skipped steps).
    pub fn with_model(mut self, model: impl ModelName) -> Agent {
        self.model = model.into_model();
        self
    }

    /// Run the agent as step `spec` on `input`.
    pub fn run(&self, ctx: &Ctx, spec: StepSpec, input: impl Into<Arc<str>>) -> AgentFuture {
        (self.run)(ctx.clone(), spec, input.into())
    }
}

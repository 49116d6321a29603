//! Tool calling: functions defined in Rust that a model may call ([`Tool`], [`Tools`]),
//! and the agent loop that runs them, [`Ctx::llm_with_tools`] — once, in the engine, so
//! that every pattern and custom orchestrator gets the same guarantees.
//!
//! The loop asks the model (round 1), runs the tools it called, hands their results back,
//! and asks again, until the model answers without calling a tool or the round cap
//! ([`Tools::max_rounds`], 8 by default) is reached. Each model call is a recorded step,
//! `{step}/round/NN`, with the engine's retries, limits, fallback, budget and events; each
//! tool call is a recorded step too, `{step}/round/NN/tool/N`, and the calls of one round
//! run concurrently. A resumed run therefore replays both the model's turns and the tools'
//! results instead of calling either again.
//!
//! What the model gets back from a tool is always a result, never a crash of the run: an
//! unknown tool name, arguments that do not parse or do not match the parameters, a
//! handler's error and a handler's panic all become error results (`is_error`) the model
//! can react to. Hitting the cap is explicit: the reply's `finish_reason` is
//! [`TOOL_ROUND_CAP`], its `tool_calls` are the calls that were not run, and the run's
//! record has a skipped step `{step}/round/NN` (and a [`CapHit`]) saying so.
//!
//! ```
//! use std::sync::Arc;
//! use belt_core::tools::{Tool, Tools};
//! use belt_core::testing::ScriptedProvider;
//! use belt_core::llm::ToolCall;
//! use belt_core::patterns::Flow;
//! use belt_core::{LlmRequest, RunOptions, StepSpec, Task, Tier, run};
//!
//! #[derive(schemars::JsonSchema, serde::Deserialize)]
//! struct Add {
//!     a: i64,
//!     b: i64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tools = Tools::new().with(Tool::new("add", "Add two integers.", |x: Add| async move {
//!     Ok::<_, String>(x.a + x.b)
//! }));
//! let flow = Flow::new("sum", move |ctx, task| {
//!     let tools = tools.clone();
//!     async move {
//!         let request = LlmRequest::new("t/model", task.description);
//!         let reply = ctx.llm_with_tools(StepSpec::new("sum", Tier::Agent), request, &tools).await?;
//!         Ok(reply.text.to_string())
//!     }
//! });
//! // A test provider that calls `add` once, then answers with the results it got.
//! let call = ToolCall { id: "c".into(), name: "add".into(), arguments: serde_json::json!({"a": 2, "b": 3}) };
//! let provider = ScriptedProvider::new("t").tool_calls_for("sum", 1, vec![call]);
//! let options = RunOptions::default().with_provider(Arc::new(provider));
//! let result = run(flow, Task::new("2 + 3?"), options).await.unwrap().result().await;
//! assert_eq!(result.final_output.as_deref(), Some("Output of sum/round/02. Tool results: 5"));
//! # }
//! ```

use crate::caps::CapHit;
use crate::ctx::{Ctx, StepError, StepReply};
use crate::effect::{Effect, Letter};
use crate::llm::{LlmRequest, Message, ToolCall, Usage};
use crate::policy::{EffectError, StepPolicy};
use crate::step::{StepId, StepSpec};
use crate::store::LetterWork;

pub use crate::tool::{
    Source, TOOL_ROUND_CAP, Tool, ToolFuture, ToolOutcome, ToolOutput, ToolPolicy, Toolbox, Tools,
};

impl Ctx {
    /// An LLM call with tools: the agent loop (see the [module docs](self)). `request`
    /// gets the tools' descriptions; its messages are the conversation so far.
    ///
    /// The reply is the last round's: its text, model and finish reason, with the usage
    /// and cost of all rounds. When the cap stopped the loop, its `finish_reason` is
    /// [`TOOL_ROUND_CAP`] and its `tool_calls` are the calls not run.
    pub async fn llm_with_tools(
        &self,
        spec: StepSpec,
        mut request: LlmRequest,
        tools: &Tools,
    ) -> Result<StepReply, StepError> {
        request.tools = tools.specs();
        let rounds = tools.rounds_cap();
        let round_id = |k: usize| spec.id.child(format!("round/{}", crate::step::pad(k, rounds, 2)));
        let (mut usage, mut cost, mut replayed, mut cached, mut simulated) =
            (Usage::default(), 0.0, true, true, false);
        let mut inputs = spec.inputs.clone();
        let mut round = 0;
        loop {
            round += 1;
            let id = round_id(round);
            let step = StepSpec { id: id.clone(), inputs: std::mem::take(&mut inputs), ..spec.clone() };
            let reply = self.call_model(step, request.clone()).await?;
            usage.add(reply.outcome.usage);
            cost += reply.outcome.cost_usd;
            replayed &= reply.outcome.replayed;
            cached &= reply.outcome.cached;
            simulated |= reply.simulated;
            let totals = |mut reply: StepReply| {
                reply.outcome.usage = usage;
                reply.outcome.cost_usd = cost;
                reply.outcome.replayed = replayed;
                reply.outcome.cached = cached;
                reply.simulated = simulated;
                reply
            };
            if reply.tool_calls.is_empty() {
                return Ok(totals(reply));
            }
            if round >= rounds {
                let next = StepSpec::new(round_id(round + 1), spec.tier.clone()).inputs(vec![id]);
                CapHit::record(self, "max_tool_rounds", rounds, next, &reply.outcome.model);
                let mut reply = totals(reply);
                reply.outcome.finish_reason = Some(TOOL_ROUND_CAP.into());
                return Ok(reply);
            }
            let calls = reply.tool_calls.clone();
            let results = futures::future::join_all(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| self.run_tool(&spec, &id, i + 1, calls.len(), call, tools)),
            )
            .await;
            request.messages.push(Message::assistant_tool_calls(reply.text.to_string(), calls.clone()));
            for (call, result) in calls.iter().zip(results) {
                let (tool_step, outcome) = result?;
                inputs.push(tool_step);
                request.messages.push(Message::tool_result(&call.id, outcome.content, outcome.is_error));
            }
        }
    }

    /// One tool call of a loop as a recorded step.
    async fn run_tool(
        &self,
        spec: &StepSpec,
        round: &StepId,
        index: usize,
        count: usize,
        call: &ToolCall,
        tools: &Tools,
    ) -> Result<(StepId, ToolOutcome), StepError> {
        let id = round.child(format!("tool/{}", crate::step::pad(index, count, 1)));
        let step = StepSpec::new(id.clone(), spec.tier.clone()).inputs(vec![round.clone()]);
        Ok((id, self.tool(step, call, tools).await?))
    }

    /// Run one tool call as step `step`, under the engine's policy for tools (the run's,
    /// refined by the tool's own [`ToolPolicy`]). A call that fails for good is recorded as
    /// an error result the model reads — the run goes on — and, when the policy gave up on
    /// it (a timeout, a server down), kept as a dead letter (`belt dlq retry` runs it
    /// again through this same path).
    pub async fn tool(
        &self,
        step: StepSpec,
        call: &ToolCall,
        tools: &Tools,
    ) -> Result<ToolOutcome, StepError> {
        // As recorded before tool calls had policies: the call's name and arguments.
        let input = (&call.name, &call.arguments);
        let Some(tool) = tools.get(&call.name) else {
            let message = format!("there is no tool named `{}`; the tools are: {}", call.name, tools.names());
            let outcome = ToolOutcome { content: message, is_error: true, sources: Vec::new() };
            let work = || std::future::ready(Ok::<_, EffectError>(outcome.clone()));
            let effect = Effect::new(*self.shared.policies.for_tools());
            return self.step_with(step, &input, effect, work).await;
        };
        let effect = self.tool_effect(tool);
        let cap = tools.result_cap;
        let work = || {
            let running = tool.call(call.arguments.clone());
            async move { running.await.map(|out| ToolOutcome::of(out, cap)) }
        };
        let letter = Letter {
            work: LetterWork::Tool { tool_call: call.clone() },
            recover: Some(|message: &str| {
                let outcome =
                    ToolOutcome { content: message.to_string(), is_error: true, sources: Vec::new() };
                serde_json::to_string(&outcome).unwrap_or_default()
            }),
        };
        let text = serde_json::to_string(&input).unwrap_or_default();
        let outcome: ToolOutcome = self.effect(step, &text, effect, work, letter).await?;
        self.cite(&outcome.sources);
        Ok(outcome)
    }
}

impl Ctx {
    /// How this run calls `tool`: the run's policy for tools, refined by the tool's own
    /// (for a pattern that runs a tool as a plain effect, [`Ctx::step_with`]).
    pub fn tool_effect(&self, tool: &Tool) -> Effect {
        let (run, own) = (self.shared.policies.for_tools(), tool.policy());
        let policy = StepPolicy {
            timeout: own.timeout.unwrap_or(run.timeout),
            retries: own.retries.unwrap_or(run.retries),
            ..*run
        };
        Effect { policy, idempotent: own.idempotent }
    }
}

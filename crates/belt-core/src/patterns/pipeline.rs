//! Sequential pipeline: stages in order, each fed the previous stage's output.
//!
//! Stage `k` named `name` runs as step `{scope}/{kk}-{name}` (`pipeline/02-summarize`). A
//! stage built with [`Stage::each`] fans out: it splits its input into items (one per
//! non-empty line by default), runs its agent on every item in parallel under the run's
//! concurrency limit (`pipeline/02-translate/001`, `…/002`), and joins the outputs in item
//! order (separated by blank lines by default). It runs at most `max_items` items
//! (default 1000); beyond that the cap stops it, and the run's record says so.
//!
//! When a stage fails, its [`OnError`] decides: [`OnError::Abort`] (the default) ends the
//! pipeline with a [`PipelineError`]; [`OnError::Skip`] passes the stage's input on
//! unchanged; [`OnError::Recover`] passes a fixed text on instead; [`OnError::with`] asks a
//! function of the error and the stage's input which of those to do (a text that names the
//! error, a skip for some kinds of error only…). In a fan-out stage the rule applies per
//! item: a skipped item is left out of the join, a recovered one joins with the given text,
//! and one aborted item aborts the pipeline once the stage's other items have ended. A run
//! that is stopping (budget, cancel) is never recovered from.
//!
//! A stage with a condition ([`Stage::when`], over its input and the run's context) runs
//! only when the condition holds; otherwise it passes its input on unchanged, makes no
//! step, and its report says [`StageStatus::NotTaken`].
//!
//! ```
//! use belt_core::patterns::{Agent, pipeline::{OnError, Pipeline, Stage}};
//! let pipeline = Pipeline::new("pipeline")
//!     .then("outline", Agent::llm("simulated/default", "Outline the topic."))
//!     .stage(Stage::each("expand", Agent::llm("simulated/default", "Expand one point.")))
//!     .stage(Stage::new("polish", Agent::llm("simulated/default", "Polish.")).on_error(OnError::Skip))
//!     .stage(
//!         Stage::new("translate", Agent::llm("simulated/default", "Translate into French."))
//!             .when(|_input, context| context["language"] == "fr")
//!             .on_error(OnError::with(|error, _input| OnError::Recover(format!("(not translated: {})", error.kind())))),
//!     );
//! // let run = pipeline.run(&ctx, "Rust's ownership model").await?;
//! ```

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, pad, stopping};
use crate::step::{StepId, StepSpec, Tier};

/// What a failed stage (or item) does to the pipeline.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OnError {
    /// End the pipeline with an error.
    #[default]
    Abort,
    /// Go on with the stage's input (a fan-out item is left out of the join).
    Skip,
    /// Go on with this text as the stage's (or item's) output.
    Recover(String),
    /// Ask a function of the error and the stage's (item's) input; see [`OnError::with`].
    Decide(ErrorHandler),
}

impl OnError {
    /// The rule a function of the failure decides, one failure at a time: it gets the
    /// error and the stage's (or item's) input, and answers [`OnError::Abort`],
    /// [`OnError::Skip`] or [`OnError::Recover`] (another `Decide` is taken as `Abort`).
    pub fn with(decide: impl Fn(&StepError, &str) -> OnError + Send + Sync + 'static) -> OnError {
        OnError::Decide(ErrorHandler(Arc::new(decide)))
    }

    /// What to do about `error` of the stage run on `input`.
    fn decide(&self, error: &StepError, input: &str) -> OnError {
        match self {
            OnError::Decide(handler) => match (handler.0)(error, input) {
                OnError::Decide(_) => OnError::Abort,
                plain => plain,
            },
            plain => plain.clone(),
        }
    }
}

/// A function that decides what a failure does ([`OnError::with`]). Two handlers are equal
/// when they are the same function.
#[derive(Clone)]
pub struct ErrorHandler(Arc<Decide>);

/// What [`OnError::with`] takes: the error and the stage's (item's) input to a rule.
type Decide = dyn Fn(&StepError, &str) -> OnError + Send + Sync;

impl std::fmt::Debug for ErrorHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorHandler(..)")
    }
}

impl PartialEq for ErrorHandler {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A stage's condition over its input and the run's context (`null` when it has none).
type Condition = Arc<dyn Fn(&str, &serde_json::Value) -> bool + Send + Sync>;

type Split = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;
type Join = Arc<dyn Fn(&[Arc<str>]) -> String + Send + Sync>;

#[derive(Clone)]
enum Work {
    One(Agent),
    Each { agent: Agent, split: Split, join: Join, max_items: usize },
}

/// One stage of a [`Pipeline`].
#[derive(Clone)]
pub struct Stage {
    name: String,
    work: Work,
    on_error: OnError,
    when: Option<Condition>,
}

/// Items a fan-out stage runs at most, unless told otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 1000;

impl Stage {
    /// A stage that runs `agent` once on its input.
    pub fn new(name: impl Into<String>, agent: Agent) -> Stage {
        Stage { name: name.into(), work: Work::One(agent), on_error: OnError::Abort, when: None }
    }

    /// A stage that runs `agent` on every item of its input in parallel: by default one item
    /// per non-empty line, outputs joined by blank lines.
    pub fn each(name: impl Into<String>, agent: Agent) -> Stage {
        let split: Split = Arc::new(|text: &str| {
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
        });
        let join: Join = Arc::new(|outputs: &[Arc<str>]| {
            outputs.iter().map(|o| o.trim_end()).collect::<Vec<_>>().join("\n\n")
        });
        Stage {
            name: name.into(),
            work: Work::Each { agent, split, join, max_items: DEFAULT_MAX_ITEMS },
            on_error: OnError::Abort,
            when: None,
        }
    }

    pub fn on_error(mut self, on_error: OnError) -> Stage {
        self.on_error = on_error;
        self
    }

    /// Run the stage only when `condition` holds for its input and the run's context
    /// ([`Ctx::context`]; `null` when the run has none); otherwise its input goes on
    /// unchanged ([`StageStatus::NotTaken`]).
    pub fn when(
        mut self,
        condition: impl Fn(&str, &serde_json::Value) -> bool + Send + Sync + 'static,
    ) -> Stage {
        self.when = Some(Arc::new(condition));
        self
    }

    /// How a fan-out stage splits its input into items (no effect on a single stage).
    pub fn split(mut self, f: impl Fn(&str) -> Vec<String> + Send + Sync + 'static) -> Stage {
        if let Work::Each { split, .. } = &mut self.work {
            *split = Arc::new(f);
        }
        self
    }

    /// How a fan-out stage joins its items' outputs, in item order.
    pub fn join(mut self, f: impl Fn(&[Arc<str>]) -> String + Send + Sync + 'static) -> Stage {
        if let Work::Each { join, .. } = &mut self.work {
            *join = Arc::new(f);
        }
        self
    }

    /// The most items a fan-out stage runs; the rest are not run (a [`CapHit`]).
    pub fn max_items(mut self, n: usize) -> Stage {
        if let Work::Each { max_items, .. } = &mut self.work {
            *max_items = n;
        }
        self
    }
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StageStatus {
    Completed,
    /// It (or some of its items) failed and [`OnError::Recover`] stood in.
    Recovered(Vec<StepError>),
    /// It (or some of its items) failed and [`OnError::Skip`] went on without them.
    Skipped(Vec<StepError>),
    /// Its condition ([`Stage::when`]) did not hold: it did not run, and passed its input on.
    NotTaken,
}

/// One stage's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub name: String,
    pub step: StepId,
    pub status: StageStatus,
    /// What the stage passed on.
    pub output: Arc<str>,
    /// Set when the stage's `max_items` cap left items out.
    pub cap: Option<CapHit>,
}

/// A pipeline that ran to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineRun {
    pub output: Arc<str>,
    pub stages: Vec<StageReport>,
}

impl PipelineRun {
    /// The caps that cut stages short, if any.
    pub fn caps(&self) -> Vec<&CapHit> {
        self.stages.iter().filter_map(|s| s.cap.as_ref()).collect()
    }
}

/// A stage failed under [`OnError::Abort`] (or the run stopped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pipeline stage `{stage}` ({step}) failed: {error}")]
pub struct PipelineError {
    pub stage: String,
    pub step: StepId,
    pub error: StepError,
    /// The stages that ended before it.
    pub completed: Vec<StageReport>,
}

/// Stages run in order (see the module docs).
#[derive(Clone)]
pub struct Pipeline {
    scope: String,
    stages: Vec<Stage>,
}

impl Pipeline {
    /// An empty pipeline whose steps are named under `scope`.
    pub fn new(scope: impl Into<String>) -> Pipeline {
        Pipeline { scope: scope.into(), stages: Vec::new() }
    }

    pub fn stage(mut self, stage: Stage) -> Pipeline {
        self.stages.push(stage);
        self
    }

    /// Shorthand for `.stage(Stage::new(name, agent))`.
    pub fn then(self, name: impl Into<String>, agent: Agent) -> Pipeline {
        self.stage(Stage::new(name, agent))
    }

    /// The StepId of stage `index` (0-based).
    pub fn step_id(&self, index: usize) -> StepId {
        let n = self.stages.len();
        StepId::new(format!("{}/{}-{}", self.scope, pad(index + 1, n, 2), self.stages[index].name))
    }

    /// Run the stages on `input`.
    pub async fn run(&self, ctx: &Ctx, input: impl Into<Arc<str>>) -> Result<PipelineRun, PipelineError> {
        let mut current: Arc<str> = input.into();
        let mut reports: Vec<StageReport> = Vec::with_capacity(self.stages.len());
        let mut previous: Option<StepId> = None;
        for (i, stage) in self.stages.iter().enumerate() {
            let id = self.step_id(i);
            let spec = StepSpec::new(id.clone(), Tier::Agent).inputs(previous.iter().cloned().collect());
            let abort = |error: StepError, reports: Vec<StageReport>| PipelineError {
                stage: stage.name.clone(),
                step: id.clone(),
                error,
                completed: reports,
            };
            if let Some(when) = &stage.when
                && !when(&current, ctx.context().unwrap_or(&serde_json::Value::Null))
            {
                reports.push(StageReport {
                    name: stage.name.clone(),
                    step: id.clone(),
                    status: StageStatus::NotTaken,
                    output: current.clone(),
                    cap: None,
                });
                continue;
            }
            let (output, status, cap) = match &stage.work {
                Work::One(agent) => match agent.run(ctx, spec, current.clone()).await {
                    Ok(out) => (out, StageStatus::Completed, None),
                    Err(e) if stopping(ctx) => return Err(abort(e, reports)),
                    Err(e) => match stage.on_error.decide(&e, &current) {
                        OnError::Skip => (current.clone(), StageStatus::Skipped(vec![e]), None),
                        OnError::Recover(text) => (Arc::from(text), StageStatus::Recovered(vec![e]), None),
                        _ => return Err(abort(e, reports)),
                    },
                },
                Work::Each { agent, split, join, max_items } => {
                    let mut items = split(&current);
                    let cap = (items.len() > *max_items).then(|| {
                        let next = StepSpec::new(id.child(pad(max_items + 1, items.len(), 3)), Tier::Agent);
                        CapHit::record(ctx, "max_items", *max_items, next, agent.model())
                    });
                    items.truncate(*max_items);
                    let n = items.len();
                    // Each item's input, for the error handler of a failed one.
                    let inputs = items.clone();
                    let outcomes = ctx
                        .all(items.into_iter().enumerate().map(|(k, item)| {
                            let item_spec = StepSpec::new(id.child(pad(k + 1, n, 3)), Tier::Agent)
                                .inputs(spec.inputs.clone());
                            agent.run(ctx, item_spec, item)
                        }))
                        .await;
                    let mut kept: Vec<Arc<str>> = Vec::with_capacity(n);
                    let (mut errors, mut recovered) = (Vec::new(), false);
                    for (outcome, input) in outcomes.into_iter().zip(&inputs) {
                        match outcome {
                            Ok(out) => kept.push(out),
                            Err(e) if stopping(ctx) => return Err(abort(e, reports)),
                            Err(e) => {
                                match stage.on_error.decide(&e, input) {
                                    OnError::Skip => {}
                                    OnError::Recover(text) => {
                                        kept.push(Arc::from(text));
                                        recovered = true;
                                    }
                                    _ => return Err(abort(e, reports)),
                                }
                                errors.push(e);
                            }
                        }
                    }
                    let status = match (recovered, errors.is_empty()) {
                        (_, true) => StageStatus::Completed,
                        (true, false) => StageStatus::Recovered(errors),
                        (false, false) => StageStatus::Skipped(errors),
                    };
                    (Arc::from(join(&kept)), status, cap)
                }
            };
            reports.push(StageReport {
                name: stage.name.clone(),
                step: id.clone(),
                status,
                output: output.clone(),
                cap,
            });
            current = output;
            previous = Some(id);
        }
        Ok(PipelineRun { output: current, stages: reports })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{record, steps, within};
    use crate::result::{AgentStatus, RunStatus};
    use crate::testing::ScriptedProvider;

    fn echo(tag: &'static str) -> Agent {
        Agent::map(move |input| Ok(format!("{tag}({input})")))
    }

    #[tokio::test]
    async fn each_stage_gets_the_previous_output_in_order() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let pipeline = Pipeline::new("pipeline")
            .then("a", echo("a"))
            .then("b", echo("b"))
            .then("llm", Agent::llm("t/m", "role"))
            .then("c", echo("c"));
        let (run, result) = within(&p, move |ctx| async move { pipeline.run(&ctx, "x").await }).await;
        let run = run.unwrap();
        assert_eq!(&*run.output, "c(Output of pipeline/03-llm. )");
        assert_eq!(&*run.stages[1].output, "b(a(x))");
        let ids: Vec<&str> = run.stages.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(ids, ["pipeline/01-a", "pipeline/02-b", "pipeline/03-llm", "pipeline/04-c"]);
        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!(record(&result, "pipeline/03-llm").inputs[0].as_str(), "pipeline/02-b");
        assert_eq!(p.calls("pipeline/03-llm"), 1);
    }

    #[tokio::test]
    async fn a_resumed_pipeline_replays_every_step_without_calling_again() {
        use crate::patterns::testkit::{options, within_options};
        use crate::store::{MemoryStore, RunStore};
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let pipeline = Pipeline::new("pipeline")
            .then("draft", Agent::llm("t/m", "w"))
            .stage(Stage::each("each", Agent::llm("t/m", "e")).split(|_| vec!["a".into(), "b".into()]))
            .then("edit", Agent::llm("t/m", "e"));
        let go = |p: &Arc<ScriptedProvider>| {
            let mut o = options(p).with_store(store.clone());
            o.run_id = Some("run-1".into());
            let pipeline = pipeline.clone();
            within_options(o, move |ctx| async move { pipeline.run(&ctx, "x").await.unwrap().output })
        };
        let first = Arc::new(ScriptedProvider::new("t"));
        let (out1, _) = go(&first).await;
        assert_eq!(first.total_calls(), 4);
        let second = Arc::new(ScriptedProvider::new("t"));
        let (out2, result) = go(&second).await;
        assert_eq!(out2, out1);
        assert_eq!(second.total_calls(), 0, "nothing is paid for twice");
        assert!(result.agents.iter().all(|a| a.outcome.replayed));
    }

    #[tokio::test]
    async fn on_error_abort_skip_and_recover() {
        let fatal = LlmError::Auth("no".into());
        let p = Arc::new(ScriptedProvider::new("t").always_fail("pipeline/02", fatal));
        let build = |on_error: OnError| {
            Pipeline::new("pipeline")
                .then("a", echo("a"))
                .stage(Stage::new("bad", Agent::llm("t/m", "r")).on_error(on_error))
                .then("c", echo("c"))
        };

        let abort = build(OnError::Abort);
        let (out, result) = within(&p, move |ctx| async move { abort.run(&ctx, "x").await }).await;
        let err = out.unwrap_err();
        assert_eq!(err.stage, "bad");
        assert_eq!(err.step.as_str(), "pipeline/02-bad");
        assert_eq!(err.completed.len(), 1);
        assert!(err.to_string().starts_with("pipeline stage `bad` (pipeline/02-bad) failed"), "{err}");
        assert!(result.agents.iter().all(|a| a.step.as_str() != "pipeline/03-c"), "c never ran");

        let skip = build(OnError::Skip);
        let (out, _) = within(&p, move |ctx| async move { skip.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "c(a(x))", "the skipped stage passes its input on");
        assert!(matches!(&out.stages[1].status, StageStatus::Skipped(e) if e.len() == 1));

        let recover = build(OnError::Recover("fallback".into()));
        let (out, result) = within(&p, move |ctx| async move { recover.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "c(fallback)");
        assert!(matches!(&out.stages[1].status, StageStatus::Recovered(_)));
        assert_eq!(result.status, RunStatus::Partial, "the failed step stays on record");
        assert_eq!(steps(&result, AgentStatus::Failed), ["pipeline/02-bad"]);
    }

    #[tokio::test]
    async fn on_error_as_a_function_of_the_error_and_the_input() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .always_fail("pipeline/02", LlmError::Auth("no".into()))
                .always_fail("items/02-each/002", LlmError::Auth("x".into())),
        );
        let named = Pipeline::new("pipeline").then("a", echo("a")).stage(
            Stage::new("bad", Agent::llm("t/m", "r"))
                .on_error(OnError::with(|e, input| OnError::Recover(format!("[{} on {input}]", e.kind())))),
        );
        let (out, _) = within(&p, move |ctx| async move { named.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "[auth on a(x)]");
        assert!(matches!(&out.stages[1].status, StageStatus::Recovered(e) if e.len() == 1));

        // Per item: the handler sees each failed item's own input; a nested Decide aborts.
        let items = Pipeline::new("items").then("list", Agent::map(|_| Ok("a\nb\nc".into()))).stage(
            Stage::each("each", Agent::llm("t/m", "r")).on_error(OnError::with(|_, item| {
                if item == "b" { OnError::Recover("(b failed)".into()) } else { OnError::Abort }
            })),
        );
        let (out, _) = within(&p, move |ctx| async move { items.run(&ctx, "x").await }).await;
        assert!(out.unwrap().output.contains("\n\n(b failed)\n\n"));
        let nested = Pipeline::new("pipeline").then("a", echo("a")).stage(
            Stage::new("bad", Agent::llm("t/m", "r"))
                .on_error(OnError::with(|_, _| OnError::with(|_, _| OnError::Skip))),
        );
        let (out, _) = within(&p, move |ctx| async move { nested.run(&ctx, "x").await }).await;
        assert_eq!(out.unwrap_err().stage, "bad");
    }

    #[tokio::test]
    async fn a_conditional_stage_runs_only_when_its_condition_holds() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let pipeline = Pipeline::new("pipeline")
            .then("a", echo("a"))
            .stage(Stage::new("fr", echo("fr")).when(|_, cx| cx["language"] == "fr"))
            .stage(Stage::new("long", echo("long")).when(|input, _| input.len() > 100))
            .then("c", echo("c"));
        let french = pipeline.clone();
        let context = serde_json::json!({"language": "fr"});
        let (out, result) = crate::patterns::testkit::within_context(&p, context, move |ctx| async move {
            french.run(&ctx, "x").await
        })
        .await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "c(fr(a(x)))");
        assert_eq!(out.stages[1].status, StageStatus::Completed);
        assert_eq!(out.stages[2].status, StageStatus::NotTaken);
        assert!(result.agents.iter().all(|a| a.step.as_str() != "pipeline/03-long"), "no step for it");
        assert_eq!(result.status, RunStatus::Completed);
        let (out, _) = within(&p, move |ctx| async move { pipeline.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "c(a(x))", "without the context, the French stage is not taken");
        assert_eq!(out.stages[1].status, StageStatus::NotTaken);
    }

    #[tokio::test]
    async fn a_fan_out_stage_runs_items_in_parallel_and_joins_in_order() {
        let p = Arc::new(ScriptedProvider::new("t").delay(std::time::Duration::from_millis(20)));
        let pipeline = Pipeline::new("pipeline")
            .then("list", Agent::map(|_| Ok("one\n\ntwo\nthree\nfour".into())))
            .stage(Stage::each("expand", Agent::llm("t/m", "r")));
        let (out, result) = within(&p, move |ctx| async move { pipeline.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(
            &*out.output,
            "Output of pipeline/02-expand/001.\n\nOutput of pipeline/02-expand/002.\n\n\
             Output of pipeline/02-expand/003.\n\nOutput of pipeline/02-expand/004."
        );
        assert_eq!(p.max_in_flight(), 4, "the items ran at once");
        assert_eq!(record(&result, "pipeline/02-expand/003").inputs[0].as_str(), "pipeline/01-list");
    }

    #[tokio::test]
    async fn fan_out_errors_apply_per_item_and_the_cap_is_recorded() {
        let p = Arc::new(
            ScriptedProvider::new("t").always_fail("pipeline/02-each/002", LlmError::Auth("x".into())),
        );
        let failing = |on_error| {
            Pipeline::new("pipeline")
                .then("list", Agent::map(|_| Ok("a\nb\nc\nd\ne".into())))
                .stage(Stage::each("each", Agent::llm("t/m", "r")).on_error(on_error).max_items(3))
        };
        let skip = failing(OnError::Skip);
        let (out, result) = within(&p, move |ctx| async move { skip.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "Output of pipeline/02-each/001.\n\nOutput of pipeline/02-each/003.");
        let cap = out.stages[1].cap.clone().expect("the cap cut the stage");
        assert_eq!((cap.cap.as_str(), cap.limit, cap.at.as_str()), ("max_items", 3, "pipeline/02-each/004"));
        let skipped = record(&result, "pipeline/02-each/004");
        assert_eq!(skipped.status, AgentStatus::Skipped);
        assert!(skipped.error.as_deref().unwrap().contains("cap max_items = 3"), "{:?}", skipped.error);
        assert_eq!(p.total_calls(), 3);

        let recover = failing(OnError::Recover("?".into()));
        let (out, _) = within(&p, move |ctx| async move { recover.run(&ctx, "x").await }).await;
        assert!(out.unwrap().output.contains("\n\n?\n\n"));

        let abort = failing(OnError::Abort);
        let (out, _) = within(&p, move |ctx| async move { abort.run(&ctx, "x").await }).await;
        assert_eq!(out.unwrap_err().step.as_str(), "pipeline/02-each");
    }
}

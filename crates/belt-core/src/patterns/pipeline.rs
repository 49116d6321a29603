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
//! unchanged; [`OnError::Recover`] passes a fixed text on instead. In a fan-out stage the
//! rule applies per item: a skipped item is left out of the join, a recovered one joins
//! with the given text, and one aborted item aborts the pipeline once the stage's other
//! items have ended. A run that is stopping (budget, cancel) is never recovered from.
//!
//! ```
//! use belt_core::patterns::{Agent, pipeline::{OnError, Pipeline, Stage}};
//! let pipeline = Pipeline::new("pipeline")
//!     .then("outline", Agent::llm("simulated/default", "Outline the topic."))
//!     .stage(Stage::each("expand", Agent::llm("simulated/default", "Expand one point.")))
//!     .stage(Stage::new("polish", Agent::llm("simulated/default", "Polish.")).on_error(OnError::Skip));
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
}

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
}

/// Items a fan-out stage runs at most, unless told otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 1000;

impl Stage {
    /// A stage that runs `agent` once on its input.
    pub fn new(name: impl Into<String>, agent: Agent) -> Stage {
        Stage { name: name.into(), work: Work::One(agent), on_error: OnError::Abort }
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
        }
    }

    pub fn on_error(mut self, on_error: OnError) -> Stage {
        self.on_error = on_error;
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
            let (output, status, cap) = match &stage.work {
                Work::One(agent) => match agent.run(ctx, spec, current.clone()).await {
                    Ok(out) => (out, StageStatus::Completed, None),
                    Err(e) if stopping(ctx) => return Err(abort(e, reports)),
                    Err(e) => match &stage.on_error {
                        OnError::Abort => return Err(abort(e, reports)),
                        OnError::Skip => (current.clone(), StageStatus::Skipped(vec![e]), None),
                        OnError::Recover(text) => {
                            (Arc::from(text.as_str()), StageStatus::Recovered(vec![e]), None)
                        }
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
                    let outcomes = ctx
                        .all(items.into_iter().enumerate().map(|(k, item)| {
                            let item_spec = StepSpec::new(id.child(pad(k + 1, n, 3)), Tier::Agent)
                                .inputs(spec.inputs.clone());
                            agent.run(ctx, item_spec, item)
                        }))
                        .await;
                    let mut kept: Vec<Arc<str>> = Vec::with_capacity(n);
                    let mut errors = Vec::new();
                    for outcome in outcomes {
                        match outcome {
                            Ok(out) => kept.push(out),
                            Err(e) => {
                                if stopping(ctx) || stage.on_error == OnError::Abort {
                                    return Err(abort(e, reports));
                                }
                                if let OnError::Recover(text) = &stage.on_error {
                                    kept.push(Arc::from(text.as_str()));
                                }
                                errors.push(e);
                            }
                        }
                    }
                    let status = match (&stage.on_error, errors.is_empty()) {
                        (_, true) => StageStatus::Completed,
                        (OnError::Recover(_), false) => StageStatus::Recovered(errors),
                        (_, false) => StageStatus::Skipped(errors),
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

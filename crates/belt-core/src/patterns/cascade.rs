//! The hierarchical cascade (first described as Beltalowda): workers (belters) run the
//! subtasks in parallel, synthesizers (drummers) each merge a group of workers, and an
//! executive (camina) writes the final synthesis once there are two or more synthesizers.
//!
//! The tier shape depends only on the number of workers `N` and the group size `G`:
//! - `N < G`: no synthesizer; the final output combines the workers' outputs
//!   ([`SynthesizeMode::Always`] adds an executive over the workers, `Never` skips all
//!   synthesis);
//! - [`SynthesizeMode::NoExecutive`] keeps the synthesizer levels and skips the executive:
//!   the final output combines the top level's syntheses (the original's
//!   `enable_camina=False`);
//! - level 1 has `floor(N/G)` synthesizers over contiguous, balanced groups;
//! - while a level has more than `2·G` synthesizers, a level of `floor(count/G)` is added;
//! - an executive synthesizes the top level when it has 2 or more; with exactly 1, that
//!   synthesizer's output is final.
//!
//! Synthesis starts once every worker has ended, not group by group: the run's
//! `min_success` rule (fail without paying for synthesis when too few workers succeed)
//! can only be decided then.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ctx::{Ctx, StepError};
use crate::event::EventKind;
use crate::llm::{CallHints, LlmError, LlmRequest, Providers};
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis, combine_outputs};
use crate::patterns::decompose::Decomposer;
pub use crate::patterns::decompose::{PlanItem, Strategy, parse_plan, template_subtasks};
use crate::patterns::window::{self, BYTES_PER_TOKEN, MIN_SHARE_BYTES, estimate_tokens, prompt_budget};
use crate::patterns::{Agent, Refine};
use crate::plan::{Subtask, Task};
use crate::result::{Degradation, DegradeKind};
use crate::step::{StepId, StepSpec, Tier, index_width};

/// Whether the cascade synthesizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SynthesizeMode {
    /// As the tier shape says.
    #[default]
    Auto,
    /// Also an executive over the workers when there are fewer than `G` of them.
    Always,
    /// No synthesis: the final output combines the workers' outputs.
    Never,
    /// The synthesizers but no executive: the final output combines the top synthesizer
    /// level's outputs (with fewer than `G` workers, the workers' outputs).
    #[serde(rename = "no-executive", alias = "no_executive")]
    NoExecutive,
}

impl std::str::FromStr for SynthesizeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            "no-executive" | "no_executive" => Ok(Self::NoExecutive),
            other => {
                Err(format!("`{other}` is not a synthesize mode; use auto, always, never or no-executive"))
            }
        }
    }
}

/// Model and sampling for one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierSettings {
    pub model: Arc<str>,
    pub temperature: f32,
    pub max_tokens: u32,
}

/// The cascade orchestrator. Per-tier timeouts and retries are engine policies
/// ([`crate::Policies`]), not settings of the pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cascade {
    /// Workers (subtasks) to decompose the task into; the most of them with `min_agents`.
    pub agents: usize,
    /// The fewest workers, when the decomposer chooses how many (`--min-agents`): the plan
    /// holds `min_agents..=agents` subtasks. `None`: exactly `agents`.
    #[serde(default)]
    pub min_agents: Option<usize>,
    /// How the decomposer splits the task (`--strategy`; `auto`: it chooses from the task).
    #[serde(default)]
    pub strategy: Strategy,
    pub group_size: usize,
    pub synthesize: SynthesizeMode,
    pub decomposer: TierSettings,
    pub worker: TierSettings,
    pub synthesizer: TierSettings,
    pub executive: TierSettings,
    /// Critique-and-revise rounds over the final synthesis (`--refine N`; 0: none): a judge
    /// on the executive's model critiques the text and a reviser rewrites it, until the
    /// judge accepts it or N revisions were written (see [`Cascade::refiner`]).
    #[serde(default)]
    pub refine: usize,
    /// How many times a worker cut off by its token cap is asked to continue (0: never;
    /// `--continue-truncated N`). See [`Cascade::continued`].
    #[serde(default)]
    pub continue_truncated: usize,
    /// Graceful degradation (`--degrade`): when more than this fraction of a tier's steps
    /// fail, the cascade falls a level — see [`Cascade::degrade`]. `None`: it never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<f64>,
}

/// The default group size `G`.
pub const DEFAULT_GROUP_SIZE: usize = 5;

impl Cascade {
    /// `agents` workers, every tier on `model`, with the default temperatures
    /// (0.7 workers, 0.6 synthesizers, 0.5 executive).
    pub fn new(agents: usize, model: &str) -> Self {
        let model: Arc<str> = Arc::from(model);
        let tier = |temperature, max_tokens| TierSettings { model: model.clone(), temperature, max_tokens };
        Cascade {
            agents,
            min_agents: None,
            strategy: Strategy::Auto,
            group_size: DEFAULT_GROUP_SIZE,
            synthesize: SynthesizeMode::Auto,
            decomposer: tier(0.3, decompose_max_tokens(agents)),
            worker: tier(0.7, 1024),
            synthesizer: tier(0.6, 1536),
            executive: tier(0.5, 2048),
            refine: 0,
            continue_truncated: 0,
            degrade: None,
        }
    }

    /// The refinement of the final text, as `--refine N` runs it: steps `refine/NN/judge`
    /// (a critique, or DONE) and `refine/NN/draft` (a revision), on the executive's model.
    /// The first draft is the synthesis itself, so it costs nothing.
    pub fn refiner(&self, synthesis: Arc<str>) -> Refine {
        let model = self.executive.model.clone();
        let first = Agent::new(move |_, _, _| {
            let text = synthesis.clone();
            async move { Ok(text) }
        });
        let max_tokens = self.executive.max_tokens;
        let m = model.clone();
        let revise = Agent::request(model.clone(), move |brief| {
            LlmRequest::new(&m, brief)
                .system(
                    "You revise reports: apply every point of the critique, keep what is right, and \
                     return the whole improved report in Markdown.",
                )
                .temperature(0.4)
                .max_tokens(max_tokens)
        });
        Refine::new(first, revise)
            .judge(
                &model,
                "a complete, accurate and well-structured answer to the task: every part of the task \
                 covered, claims specific and supported, no contradictions or repetition, a clear \
                 summary and recommendations",
            )
            .max_iterations(self.refine + 1)
            .unjudged_last()
    }

    /// The decomposition this cascade runs (see [`crate::patterns::decompose`]).
    pub fn decomposition(&self) -> Decomposer {
        Decomposer {
            model: self.decomposer.model.clone(),
            temperature: self.decomposer.temperature,
            max_tokens: self.decomposer.max_tokens,
            min: self.min_agents.unwrap_or(self.agents).clamp(1, self.agents.max(1)),
            max: self.agents,
            strategy: self.strategy,
        }
    }

    /// Synthesizer levels for `n` workers (see the module docs); empty when `n < G`.
    pub fn levels(&self, n: usize) -> Vec<usize> {
        tier_levels(n, self.group_size)
    }

    fn has_executive(&self, n: usize) -> bool {
        match self.synthesize {
            SynthesizeMode::Never | SynthesizeMode::NoExecutive => false,
            _ => match self.levels(n).last() {
                Some(&top) => top >= 2,
                None => self.synthesize == SynthesizeMode::Always,
            },
        }
    }
}

/// Room for about 100 tokens per subtask, within what models can write in one reply.
fn decompose_max_tokens(agents: usize) -> u32 {
    (200 + 100 * agents.min(1_000_000)).clamp(1024, 32_000) as u32
}

/// Synthesizers per level for `n` workers and group size `g`.
///
/// ```
/// use belt_core::patterns::cascade::tier_levels;
/// assert_eq!(tier_levels(4, 5), Vec::<usize>::new());
/// assert_eq!(tier_levels(12, 5), vec![2]);
/// assert_eq!(tier_levels(1000, 5), vec![200, 40, 8]);
/// ```
pub fn tier_levels(n: usize, g: usize) -> Vec<usize> {
    let g = g.max(2);
    let mut levels = Vec::new();
    let first = n / g;
    if first == 0 {
        return levels;
    }
    levels.push(first);
    while let Some(&top) = levels.last()
        && top > 2 * g
    {
        levels.push(top / g);
    }
    levels
}

/// `len` items in `k` contiguous groups whose sizes differ by at most one.
pub fn balanced_groups(len: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, len.max(1));
    let (base, extra) = (len / k, len % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let size = base + usize::from(i < extra);
            let r = start..start + size;
            start += size;
            r
        })
        .collect()
}

/// The workers' results as inputs of a synthesis step.
fn worker_inputs<'a>(plan: &'a [Subtask], results: &'a [Outcome]) -> Vec<Input<'a>> {
    plan.iter().zip(results).map(|(s, r)| Input::Worker(s, r)).collect()
}

/// One input of a synthesis step: a worker's or a lower synthesizer's result.
///
/// A worker's is read where it already is, its subtask in the plan and its outcome in the
/// results, so the first level's inputs cost 16 bytes a worker (a copy of the step id, label
/// and text was 56, 53 MB at 1,000,000 workers, held while that level merges).
#[derive(Clone)]
enum Input<'a> {
    Worker(&'a Subtask, &'a Outcome),
    /// Boxed: one per synthesizer, and the worker's form stays two pointers.
    Merged(Box<Merged>),
}

/// A synthesis step's result as an input of the level above.
#[derive(Clone)]
struct Merged {
    step: StepId,
    label: Box<str>,
    /// The error boxed: a `StepError` is 56 bytes where the text is 16.
    text: Result<Arc<str>, Box<StepError>>,
}

impl Input<'_> {
    fn merged(step: StepId, label: String, text: Result<Arc<str>, StepError>) -> Self {
        Input::Merged(Box::new(Merged { step, label: label.into_boxed_str(), text: text.map_err(Box::new) }))
    }

    fn step(&self) -> &StepId {
        match self {
            Input::Worker(_, Ok(o)) => &o.step,
            Input::Worker(_, Err(e)) => e.step(),
            Input::Merged(m) => &m.step,
        }
    }

    /// A worker's subtask description; a synthesis's label of its own.
    fn label(&self) -> &str {
        match self {
            Input::Worker(s, _) => &s.description,
            Input::Merged(m) => &m.label,
        }
    }

    fn text(&self) -> Result<&str, &StepError> {
        match self {
            Input::Worker(_, r) => r.as_ref().map(|o| &*o.text),
            Input::Merged(m) => m.text.as_deref().map_err(|e| &**e),
        }
    }
}

#[async_trait]
impl Orchestrator for Cascade {
    fn name(&self) -> &str {
        "cascade"
    }

    fn agents(&self) -> Option<usize> {
        Some(self.agents)
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        let mut shape = vec![n];
        if self.synthesize != SynthesizeMode::Never {
            shape.extend(self.levels(n));
        }
        if self.has_executive(n) {
            shape.push(1);
        }
        shape
    }

    fn validate(&self, providers: &Providers) -> Result<(), String> {
        if self.agents == 0 {
            return Err("the cascade needs at least 1 agent".into());
        }
        if let Some(min) = self.min_agents
            && !(1..=self.agents).contains(&min)
        {
            return Err(format!("the fewest agents must be 1 to {} (the most), got {min}", self.agents));
        }
        if self.group_size < 2 {
            return Err(format!("group size must be at least 2, got {}", self.group_size));
        }
        for t in [&self.decomposer, &self.worker, &self.synthesizer, &self.executive] {
            providers.check(&t.model).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        self.decomposition().decompose(ctx, task).await
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let request = self.worker_request(task, subtask, deps);
        // The request is kept (a copy per worker) only when a continuation may need it.
        let reply = if self.continue_truncated == 0 {
            ctx.llm(step.clone(), request).await?
        } else {
            let reply = ctx.llm(step.clone(), request.clone()).await?;
            self.continued(ctx, step, request, reply).await?
        };
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let synthesis = match self.degrades_to_simplified() {
            Some(at) => self.synthesize_degrading(ctx, task, plan, results, at).await?,
            None => self.synthesize_tree(ctx, task, plan, results).await?,
        };
        if self.refine == 0 || ctx.stopping().is_some() {
            return Ok(synthesis);
        }
        let text: Arc<str> = Arc::from(synthesis.text);
        match self.refiner(text.clone()).run(ctx, task.brief()).await {
            Ok(refined) => Ok(Synthesis { text: refined.output.to_string() }),
            // A stopped run (budget, cancel) or a failed revision keeps the best text it has.
            Err(e) => Ok(Synthesis { text: e.last_draft.unwrap_or(text).to_string() }),
        }
    }

    /// With `degrade`, too few workers for a synthesis is not the end: a single agent
    /// answers the whole task (see [`Cascade::degrade`]).
    async fn rescue(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
        why: &str,
    ) -> Option<Result<Synthesis, StepError>> {
        self.degrade?;
        if ctx.stopping().is_some() {
            return None;
        }
        ctx.degrade(fall("full", "single-agent", why.to_string()));
        Some(self.single_agent(ctx, task, plan, results).await)
    }
}

/// Whether `failed` of `count` steps is more than the fraction `at`.
fn too_many(failed: usize, count: usize, at: f64) -> bool {
    count > 0 && failed as f64 > at * count as f64
}

/// A fall of the cascade from one form to a simpler one.
fn fall(from: &str, to: &str, reason: String) -> Degradation {
    Degradation { kind: DegradeKind::Orchestration, tier: None, from: from.into(), to: to.into(), reason }
}

/// How much of the workers' notes a single agent is given, in all (bytes).
const SINGLE_AGENT_NOTES: usize = 48 * 1024;

/// Graceful degradation, the original framework's "full → simplified → single-agent" chain:
/// when more than `degrade` (a fraction) of the workers fail, or of a synthesizer level, the
/// *simplified* cascade skips the synthesizer tier and its executive merges the workers'
/// outputs (`degraded/executive`); when that fails too, or when fewer workers succeeded than
/// `min_success` asks (which fails a run that does not degrade), a *single agent* answers
/// the whole task (`degraded/single-agent`, on the executive's model, given the outputs
/// the workers did produce). Each fall is a `degraded` event and a line of the report.
impl Cascade {
    /// The threshold at which the synthesis falls to the simplified form: only a cascade with
    /// an executive has one (`never` and `no-executive` synthesize without).
    fn degrades_to_simplified(&self) -> Option<f64> {
        self.degrade.filter(|_| matches!(self.synthesize, SynthesizeMode::Auto | SynthesizeMode::Always))
    }

    async fn synthesize_degrading(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
        at: f64,
    ) -> Result<Synthesis, StepError> {
        let n = results.len();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if !self.levels(n).is_empty() && too_many(failed, n, at) {
            let reason = format!(
                "{failed} of {n} workers failed, more than degrade_at {at}; the synthesizer tier is skipped"
            );
            ctx.degrade(fall("full", "simplified", reason));
            return self.simplified(ctx, task, plan, results).await;
        }
        self.synthesize_tree(ctx, task, plan, results).await
    }

    /// The simplified cascade: no synthesizer tier, the executive over the workers' outputs;
    /// when it fails, a single agent.
    async fn simplified(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let inputs = worker_inputs(plan, results);
        ctx.emit_event(None, EventKind::TierStarted { tier: Tier::Executive, level: 1, count: 1 });
        let out = self.merge(ctx, task, StepSpec::new("degraded/executive", Tier::Executive), &inputs).await;
        let skipped = usize::from(matches!(out, Err(StepError::Skipped { .. })));
        ctx.emit_event(
            None,
            EventKind::TierCompleted {
                tier: Tier::Executive,
                level: 1,
                succeeded: usize::from(out.is_ok()),
                failed: usize::from(out.is_err()) - skipped,
                skipped,
            },
        );
        match out {
            Ok(text) => Ok(Synthesis { text: text.to_string() }),
            Err(e) if ctx.stopping().is_some() => Err(e),
            Err(e) => {
                ctx.degrade(fall(
                    "simplified",
                    "single-agent",
                    format!("the simplified cascade's executive failed ({e})"),
                ));
                self.single_agent(ctx, task, plan, results).await
            }
        }
    }

    /// One agent answers the whole task, given the outputs the workers did produce.
    async fn single_agent(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let task_text = task.description.trim();
        let mut prompt = format!(
            "Task: {task_text}\n\nAnswer the whole task on your own, as one complete report in Markdown: a \
             summary, the findings part by part, and recommendations."
        );
        let done: Vec<(&Subtask, &AgentOutput)> =
            plan.iter().zip(results).filter_map(|(s, r)| r.as_ref().ok().map(|o| (s, o))).collect();
        if !done.is_empty() {
            prompt.push_str(
                "\n\nNotes from the specialists who finished their parts (use them, and cover what they miss):\n",
            );
            let share = SINGLE_AGENT_NOTES / done.len();
            for (subtask, output) in &done {
                let note = crate::words::cut(output.text.trim(), share);
                prompt.push_str(&format!("\n### {}\n{note}\n", subtask.description.trim()));
            }
        }
        let request = LlmRequest::new(self.executive.model.clone(), prompt)
            .system(
                "You are a senior analyst who answers a complex task on your own, thoroughly and accurately.",
            )
            .temperature(self.executive.temperature)
            .max_tokens(self.executive.max_tokens)
            .hints(CallHints::work(task_text, task_text));
        let spec = StepSpec::new("degraded/single-agent", Tier::Executive)
            .inputs(done.iter().map(|(_, o)| o.step.clone()).collect());
        let reply = ctx.llm(spec, request).await?;
        Ok(Synthesis { text: reply.text.to_string() })
    }
}

impl Cascade {
    /// The synthesizer levels and the executive (see the module docs).
    async fn synthesize_tree(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let n = results.len();
        let combined = || Synthesis { text: combine_outputs(plan, results) };
        if self.synthesize == SynthesizeMode::Never {
            return Ok(combined());
        }
        let mut current = worker_inputs(plan, results);
        let levels = self.levels(n);
        if levels.is_empty() && !self.has_executive(n) {
            return Ok(combined());
        }
        for (li, &count) in levels.iter().enumerate() {
            let level = li + 1;
            let width = index_width(count);
            ctx.emit_event(None, EventKind::TierStarted { tier: Tier::Synthesizer, level, count });
            let groups = balanced_groups(current.len(), count);
            let inputs = &current;
            let next: Vec<Input> = ctx
                .all(groups.into_iter().enumerate().map(|(k, range)| {
                    let id = StepId::new(format!("synth/{level}/{:0width$}", k + 1));
                    let label = group_label(&inputs[range.clone()]);
                    async move {
                        let text = self
                            .merge(ctx, task, StepSpec::new(id.clone(), Tier::Synthesizer), &inputs[range])
                            .await;
                        Input::merged(id, label, text)
                    }
                }))
                .await;
            let (succeeded, skipped) = tally(&next);
            ctx.emit_event(
                None,
                EventKind::TierCompleted {
                    tier: Tier::Synthesizer,
                    level,
                    succeeded,
                    failed: count - succeeded - skipped,
                    skipped,
                },
            );
            if let Some(at) = self.degrades_to_simplified()
                && ctx.stopping().is_none()
                && too_many(count - succeeded, count, at)
            {
                let reason = format!(
                    "{} of {count} synthesizers of level {level} failed, more than degrade_at {at}; the \
                     executive merges the workers' outputs instead",
                    count - succeeded
                );
                ctx.degrade(fall("full", "simplified", reason));
                return self.simplified(ctx, task, plan, results).await;
            }
            current = next;
        }
        if self.has_executive(n) {
            let level = levels.len() + 1;
            ctx.emit_event(None, EventKind::TierStarted { tier: Tier::Executive, level, count: 1 });
            let spec = StepSpec::new("executive", Tier::Executive);
            let out = self.merge(ctx, task, spec, &current).await;
            let skipped = usize::from(matches!(out, Err(StepError::Skipped { .. })));
            ctx.emit_event(
                None,
                EventKind::TierCompleted {
                    tier: Tier::Executive,
                    level,
                    succeeded: usize::from(out.is_ok()),
                    failed: usize::from(out.is_err()) - skipped,
                    skipped,
                },
            );
            if let Ok(text) = out {
                return Ok(Synthesis { text: text.to_string() });
            }
        } else if let [top] = current.as_slice()
            && let Ok(text) = top.text()
        {
            return Ok(Synthesis { text: text.to_string() });
        }
        // The top of the tree failed: fall back to what the level below produced.
        let usable: Vec<&Input> = current.iter().filter(|i| i.text().is_ok()).collect();
        if usable.is_empty() || levels.is_empty() {
            return Ok(combined());
        }
        let mut text = String::new();
        for i in usable {
            text.push_str(&format!("## {}\n\n{}\n\n", i.label(), i.text().unwrap_or_default().trim_end()));
        }
        Ok(Synthesis { text: text.trim_end().to_string() + "\n" })
    }
}

impl Cascade {
    /// A worker's reply cut off by its token cap (`finish_reason` `length`), asked to go on
    /// where it stopped, up to [`Cascade::continue_truncated`] times: each continuation is
    /// a step of its own (`worker/007/more1`…), recorded and resumable like any other, and
    /// the texts are joined (each part's cost is its own step's).
    async fn continued(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        mut request: LlmRequest,
        mut reply: crate::ctx::StepReply,
    ) -> Result<crate::ctx::StepReply, StepError> {
        let mut text = reply.text.to_string();
        for round in 1..=self.continue_truncated {
            if !reply.outcome.truncated() || ctx.stopping().is_some() {
                break;
            }
            request.messages.push(crate::llm::Message::assistant(text.clone()));
            request.messages.push(crate::llm::Message::user(
                "You were cut off. Continue exactly where you stopped, without repeating anything.",
            ));
            let spec = StepSpec::new(step.id.child(format!("more{round}")), step.tier.clone())
                .inputs(vec![step.id.clone()]);
            let more = ctx.llm(spec, request.clone()).await?;
            text.push_str(&more.text);
            reply = more;
        }
        reply.text = Arc::from(text);
        Ok(reply)
    }

    /// One synthesizer or the executive over `inputs`; skipped when none of them succeeded.
    /// Its prompt is fitted to the model's context window (see [`Cascade::merge_fitted`]).
    async fn merge(
        &self,
        ctx: &Ctx,
        task: &Task,
        spec: StepSpec,
        inputs: &[Input<'_>],
    ) -> Result<Arc<str>, StepError> {
        let settings = self.merge_settings(&spec);
        let spec = spec.inputs(inputs.iter().map(|i| i.step().clone()).collect());
        if !inputs.iter().any(|i| i.text().is_ok()) {
            let reason = format!("none of its {} inputs succeeded", inputs.len());
            return Err(ctx.skip(spec, &settings.model, reason));
        }
        let window = ctx.capabilities(&settings.model).await.and_then(|c| c.context_window);
        self.merge_fitted(ctx, task, spec, inputs, window).await
    }

    fn merge_settings(&self, spec: &StepSpec) -> &TierSettings {
        if spec.tier == Tier::Executive { &self.executive } else { &self.synthesizer }
    }

    /// A merge whose prompt fits the model's `window` (tokens, when known): called whole
    /// when the estimate fits; otherwise — or when the model answers `prompt_too_long`,
    /// which also tells the window when it was not known — shrunk ([`Cascade::shrink`]).
    /// Every worker's work still reaches the synthesis.
    fn merge_fitted<'a>(
        &'a self,
        ctx: &'a Ctx,
        task: &'a Task,
        spec: StepSpec,
        inputs: &'a [Input<'_>],
        window: Option<u64>,
    ) -> BoxFuture<'a, Result<Arc<str>, StepError>> {
        Box::pin(async move {
            let request = self.merge_request(task, &spec, inputs, None, window);
            let max_tokens = self.merge_settings(&spec).max_tokens;
            if window.is_some_and(|w| estimate_tokens(&request) > prompt_budget(w, max_tokens)) {
                return self.shrink(ctx, task, spec, inputs, window).await;
            }
            let out = ctx.llm(spec.clone().resizable(), request).await;
            if let Err(StepError::Llm { error, .. }) = &out
                && let LlmError::PromptTooLong { context_window, .. } = **error
            {
                if let Some(w) = context_window {
                    ctx.learn_window(&self.merge_settings(&spec).model, w);
                }
                return self.shrink(ctx, task, spec, inputs, context_window.or(window)).await;
            }
            out.map(|r| r.text)
        })
    }

    /// A merge whose prompt is too long for the window. More than two usable inputs are
    /// split in two halves, each merged on its own (`ID/a`, `ID/b`: an extra level; a half
    /// of one input goes up as it is), and the two merged under the step's own id; two or fewer are each cut to their share
    /// of the window, with a note saying so.
    async fn shrink(
        &self,
        ctx: &Ctx,
        task: &Task,
        spec: StepSpec,
        inputs: &[Input<'_>],
        window: Option<u64>,
    ) -> Result<Arc<str>, StepError> {
        let ok: Vec<Input> = inputs.iter().filter(|i| i.text().is_ok()).cloned().collect();
        if ok.len() > 2 {
            let (a, b) = ok.split_at(ok.len() / 2);
            let halves = ctx
                .all([("a", a), ("b", b)].map(|(name, part)| {
                    let id = spec.id.child(name);
                    let sub = StepSpec::new(id.clone(), Tier::Synthesizer)
                        .inputs(part.iter().map(|i| i.step().clone()).collect());
                    async move {
                        // One input needs no merge of its own: it goes up as it is.
                        if let [one] = part {
                            return one.clone();
                        }
                        let text = self.merge_fitted(ctx, task, sub, part, window).await;
                        Input::merged(id, group_label(part), text)
                    }
                }))
                .await;
            // The failed inputs stay, for the final merge to say what is missing.
            let mut next: Vec<Input> = halves.into_iter().collect();
            next.extend(inputs.iter().filter(|i| i.text().is_err()).cloned());
            let spec = spec.inputs(next.iter().map(|i| i.step().clone()).collect());
            return self.merge_fitted(ctx, task, spec, &next, window).await;
        }
        let mut share = self.share(task, &spec, inputs, window);
        let request = self.merge_request(task, &spec, inputs, Some(share), window);
        let out = ctx.llm(spec.clone().resizable(), request).await;
        // The estimate was short of how densely the text tokenizes: shrink by the server's
        // own figures, once more, and let a failure stand.
        if let Err(StepError::Llm { error, .. }) = &out
            && let LlmError::PromptTooLong { prompt_tokens: Some(p), context_window: Some(w), .. } = **error
            && p > 0
        {
            let max_tokens = self.merge_settings(&spec).max_tokens;
            let ratio = prompt_budget(w, max_tokens) as f64 / p as f64 * 0.9;
            share = ((share as f64 * ratio) as usize).max(MIN_SHARE_BYTES);
            let request = self.merge_request(task, &spec, inputs, Some(share), Some(w));
            return ctx.llm(spec, request).await.map(|r| r.text);
        }
        out.map(|r| r.text)
    }

    /// The bytes each usable input may keep: the window's prompt budget less the prompt's
    /// own text, split evenly; half the longest input when the window is unknown.
    fn share(&self, task: &Task, spec: &StepSpec, inputs: &[Input<'_>], window: Option<u64>) -> usize {
        let texts: Vec<usize> = inputs.iter().filter_map(|i| i.text().ok()).map(str::len).collect();
        let share = match window {
            Some(w) => {
                let bare = self.merge_request(task, spec, inputs, Some(0), None);
                let frame = bare.input_token_bound() as usize;
                let budget = prompt_budget(w, self.merge_settings(spec).max_tokens) * BYTES_PER_TOKEN;
                (budget as usize).saturating_sub(frame) / texts.len().max(1)
            }
            None => texts.iter().max().copied().unwrap_or(0) / 2,
        };
        share.max(MIN_SHARE_BYTES)
    }

    /// A worker's request: the task, its subtask, the results it builds on.
    fn worker_request(&self, task: &Task, subtask: &Subtask, deps: &[AgentOutput]) -> LlmRequest {
        let brief = task.brief();
        let details = subtask.details();
        // One buffer sized for the whole prompt, rather than one grown by doubling.
        let size = brief.len()
            + subtask.id.len()
            + subtask.description.len()
            + subtask.specialization.len()
            + details.len()
            + 256
            + deps.iter().map(|d| d.subtask_id.len() + d.text.len() + 64).sum::<usize>();
        let mut prompt = String::with_capacity(size);
        push_all(
            &mut prompt,
            &[
                "Task: ",
                &brief,
                "\nSubtask ",
                &subtask.id,
                ": ",
                subtask.description.trim(),
                "\nSpecialization: ",
                &subtask.specialization,
                "\n",
                &details,
            ],
        );
        if !deps.is_empty() {
            prompt.push_str("\nResults of the subtasks this one builds on:\n");
            for d in deps {
                push_all(
                    &mut prompt,
                    &["\n#### Subtask ", &d.subtask_id, " (", d.step.as_str(), ")\n", d.text.trim(), "\n"],
                );
            }
        }
        prompt.push_str(
            "\nWrite your findings on this subtask as Markdown: a heading, short paragraphs, a \
             list of key findings, and the sources you rely on.",
        );
        LlmRequest::new(self.worker.model.clone(), prompt)
            .system(
                [
                    "You are ",
                    &crate::words::with_article(&subtask.specialization),
                    " working on one part of a larger research task. Be specific and factual.",
                ]
                .concat(),
            )
            .temperature(self.worker.temperature)
            .max_tokens(self.worker.max_tokens)
            .hints(CallHints::work(&brief, subtask.description.trim()))
    }

    /// The request of a merge over `inputs`, each cut to `share` bytes when given; with a
    /// known `window`, a reply cap that fits beside the prompt.
    fn merge_request(
        &self,
        task: &Task,
        spec: &StepSpec,
        inputs: &[Input<'_>],
        share: Option<usize>,
        window: Option<u64>,
    ) -> LlmRequest {
        let executive = spec.tier == Tier::Executive;
        let settings = self.merge_settings(spec);
        let brief = task.brief();
        let ok: Vec<&Input> = inputs.iter().filter(|i| i.text().is_ok()).collect();
        // Written into one buffer sized for the whole prompt: a merge's prompt holds all of
        // its inputs, and growing it by doubling copied them several times over.
        let size = brief.len()
            + 320
            + ok.iter().map(|i| i.label().len() + i.step().as_str().len() + 32).sum::<usize>()
            + ok.iter()
                .map(|i| i.text().map_or(0, |t| share.map_or(t.len(), |b| b.min(t.len()) + 64)))
                .sum::<usize>();
        let mut prompt = String::with_capacity(size);
        push_all(&mut prompt, &["Task: ", &brief, "\n"]);
        if executive {
            prompt.push_str(
                "You are the executive. Write the final report on the task from the syntheses below: \
                 an executive summary, the main findings organised by theme, disagreements between \
                 sources, and recommendations.",
            );
        } else {
            push_all(
                &mut prompt,
                &[
                    "You are synthesizer ",
                    spec.id.as_str(),
                    ". Merge the findings below into one coherent synthesis: common themes, \
                     contradictions, and the most important points, citing which input each point \
                     comes from.",
                ],
            );
        }
        prompt.push('\n');
        let mut names = Vec::with_capacity(ok.len());
        let mut number = itoa::Buffer::new();
        for (k, i) in ok.iter().enumerate() {
            let name = ["Input ", number.format(k + 1), ": ", i.label().trim()].concat();
            let text = i.text().unwrap_or_default().trim();
            let text = match share {
                Some(bytes) => window::clip(text, bytes),
                None => text.into(),
            };
            push_all(&mut prompt, &["\n### ", &name, "\n(from ", i.step().as_str(), ")\n\n", &text, "\n"]);
            names.push(name);
        }
        let missing: Vec<String> = inputs
            .iter()
            .filter_map(|i| i.text().err().map(|e| format!("{} ({})", i.step(), first_line(&e.to_string()))))
            .collect();
        if !missing.is_empty() {
            prompt.push_str(&format!(
                "\nMissing inputs: {}. Say in the synthesis that these parts are missing.\n",
                missing.join("; ")
            ));
        }
        let missing = (!missing.is_empty()).then(|| missing.join("; "));
        let mut request = LlmRequest::new(settings.model.clone(), prompt)
            .system("You synthesize the work of several analysts into one clear, well-structured text.")
            .temperature(settings.temperature)
            .max_tokens(settings.max_tokens)
            .hints(CallHints::merge(&brief, names, missing));
        if let Some(w) = window {
            request.max_tokens = window::reply_cap(w, estimate_tokens(&request), settings.max_tokens);
        }
        request
    }
}

/// What a synthesis covers, from its inputs' labels: "Background, Current state and 4 more".
fn group_label(inputs: &[Input<'_>]) -> String {
    use std::fmt::Write as _;
    // Written into one string: one allocation per group rather than one per word list.
    let mut label = String::with_capacity(96);
    for (k, input) in inputs.iter().take(3).enumerate() {
        if k > 0 {
            label.push_str(", ");
        }
        push_head_words(&mut label, input.label());
    }
    let more = inputs.len().saturating_sub(3);
    if more > 0 {
        let _ = write!(label, " and {more} more");
    }
    label
}

/// Append the first six words of `text` before its first ':', '.' or ';', separated by
/// spaces. Read word by word, so a long label is not scanned to its end for a delimiter it
/// may not have; an ASCII label byte by byte (Unicode's whitespace and a pattern of three
/// chars cost ~20 instructions a character, for every group of a cascade).
fn push_head_words(label: &mut String, text: &str) {
    const WORDS: usize = 6;
    let delimiter = |c: char| matches!(c, ':' | '.' | ';');
    let mut words = 0;
    let push = |label: &mut String, words: &mut usize, word: &str| {
        if !word.is_empty() {
            if *words > 0 {
                label.push(' ');
            }
            label.push_str(word);
            *words += 1;
        }
    };
    if text.is_ascii() {
        // `char::is_whitespace` on ASCII: tab, line feed, vertical tab, form feed, return, space.
        let space = |b: u8| matches!(b, b'\t'..=b'\r' | b' ');
        let bytes = text.as_bytes();
        let mut i = 0;
        while words < WORDS && i < bytes.len() {
            while i < bytes.len() && space(bytes[i]) {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && !space(bytes[i]) && !delimiter(bytes[i] as char) {
                i += 1;
            }
            push(label, &mut words, &text[start..i]);
            if i < bytes.len() && delimiter(bytes[i] as char) {
                break;
            }
        }
        return;
    }
    for word in text.split_whitespace() {
        let (word, ends) = match word.find(delimiter) {
            Some(at) => (&word[..at], true),
            None => (word, false),
        };
        push(label, &mut words, word);
        if ends || words == WORDS {
            break;
        }
    }
}

/// Appends `parts` to `out`: a prompt's pieces without the formatting machinery, which cost
/// a cascade ~2,000 instructions a step (a worker's prompt, and a merge's per input).
fn push_all(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// (succeeded, skipped) among a level's results.
fn tally(level: &[Input<'_>]) -> (usize, usize) {
    let ok = level.iter().filter(|i| i.text().is_ok()).count();
    let skipped =
        level.iter().filter(|i| i.text().is_err_and(|e| matches!(e, StepError::Skipped { .. }))).count();
    (ok, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's input is two pointers: the first level holds one per worker.
    #[test]
    fn a_workers_input_is_two_pointers() {
        assert_eq!(std::mem::size_of::<Input<'_>>(), 2 * std::mem::size_of::<usize>());
    }

    #[test]
    fn a_group_label_is_the_first_six_words_before_a_delimiter_of_up_to_three_inputs() {
        // The rule as first written, for comparison.
        let short = |l: &str| {
            let head = l.split([':', '.', ';']).next().unwrap_or(l).trim();
            head.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
        };
        let labels = [
            "Background: the history of the field",
            "one two three four five six seven eight",
            "  leading space. Then more",
            "foo .bar baz",
            "foo. bar",
            "a;b;c",
            ":starts with a colon",
            "",
            "   ",
            "no delimiter at all but many many words here",
            "ünïcödé wörds\u{2003}with an em space: after",
            "tabs\tand\x0bvertical\x0ctabs\r\nand lines",
            "one two three four five six",
            "trailing delimiter;",
            "a b c d e f g. h",
        ];
        for a in labels {
            for b in labels {
                let inputs = [a, b, "third one", "fourth"];
                for n in 0..=inputs.len() {
                    let given: Vec<Input> = inputs[..n]
                        .iter()
                        .map(|l| Input::merged(StepId::new("s"), l.to_string(), Ok(Arc::from(""))))
                        .collect();
                    let names: Vec<String> = inputs[..n].iter().take(3).map(|l| short(l)).collect();
                    let more = n.saturating_sub(3);
                    let expected = if more > 0 {
                        format!("{} and {more} more", names.join(", "))
                    } else {
                        names.join(", ")
                    };
                    assert_eq!(group_label(&given), expected, "{:?}", &inputs[..n]);
                }
            }
        }
    }

    /// The prompts are written piece by piece (no `format!`): byte for byte the text the
    /// formatting wrote, so a request's hash, and with it a recorded run's replay, is kept.
    #[test]
    fn prompts_are_the_text_they_were_written_as() {
        let c = Cascade::new(1, "simulated/x");
        let task = Task::new("  Study the tides ");
        let mut subtask = Subtask::new("7", " Moon's pull ").specialization("user researcher");
        subtask.agent_type = Some("analyst".into());
        let dep = |id: &str, text: &str| AgentOutput {
            subtask_id: id.into(),
            step: StepId::new(format!("worker/{id}")),
            text: Arc::from(text),
            model: Arc::from("simulated/x"),
        };
        for deps in [vec![], vec![dep("1", " first\n"), dep("b", "second")]] {
            let request = c.worker_request(&task, &subtask, &deps);
            let mut expected = format!(
                "Task: {}\nSubtask {}: {}\nSpecialization: {}\n{}",
                task.brief(),
                subtask.id,
                subtask.description.trim(),
                subtask.specialization,
                subtask.details()
            );
            if !deps.is_empty() {
                expected.push_str("\nResults of the subtasks this one builds on:\n");
                for d in &deps {
                    expected.push_str(&format!(
                        "\n#### Subtask {} ({})\n{}\n",
                        d.subtask_id,
                        d.step,
                        d.text.trim()
                    ));
                }
            }
            expected.push_str(
                "\nWrite your findings on this subtask as Markdown: a heading, short paragraphs, a \
                 list of key findings, and the sources you rely on.",
            );
            assert_eq!(request.prompt(), expected);
            assert_eq!(
                request.system.as_deref(),
                Some(
                    "You are a user researcher working on one part of a larger research task. Be specific and factual."
                )
            );
        }
        let texts = [Ok("  one  "), Err("no reply\nmore"), Ok("two")];
        let inputs: Vec<Input> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let step = StepId::new(format!("synth/1/00{k}"));
                let text =
                    t.map(Arc::from).map_err(|e| StepError::Failed { step: step.clone(), message: e.into() });
                Input::merged(step, format!(" Label {k} "), text)
            })
            .collect();
        for (tier, share) in [(Tier::Synthesizer, None), (Tier::Executive, Some(2))] {
            let executive = tier == Tier::Executive;
            let spec = StepSpec::new("synth/2/001", tier);
            let request = c.merge_request(&task, &spec, &inputs, share, None);
            let mut expected = format!("Task: {}\n", task.brief());
            if executive {
                expected.push_str(
                    "You are the executive. Write the final report on the task from the syntheses below: \
                     an executive summary, the main findings organised by theme, disagreements between \
                     sources, and recommendations.",
                );
            } else {
                expected.push_str(&format!(
                    "You are synthesizer {}. Merge the findings below into one coherent synthesis: \
                     common themes, contradictions, and the most important points, citing which input \
                     each point comes from.",
                    spec.id
                ));
            }
            expected.push('\n');
            for (k, i) in inputs.iter().filter(|i| i.text().is_ok()).enumerate() {
                let text = i.text().unwrap_or_default().trim();
                let text = share.map_or(text.into(), |b| window::clip(text, b));
                let name = format!("Input {}: {}", k + 1, i.label().trim());
                expected.push_str(&format!("\n### {name}\n(from {})\n\n{text}\n", i.step()));
            }
            let missing: Vec<String> = inputs
                .iter()
                .filter_map(|i| {
                    i.text().err().map(|e| format!("{} ({})", i.step(), first_line(&e.to_string())))
                })
                .collect();
            expected.push_str(&format!(
                "\nMissing inputs: {}. Say in the synthesis that these parts are missing.\n",
                missing.join("; ")
            ));
            assert!(expected.contains("synth/1/001 ("), "{expected}");
            assert_eq!(request.prompt(), expected);
        }
    }

    #[test]
    fn tier_shapes_match_the_spec() {
        let c = Cascade::new(1, "simulated/x");
        let shape = |n: usize| c.shape(n);
        assert_eq!(shape(1), vec![1]);
        assert_eq!(shape(4), vec![4]);
        assert_eq!(shape(5), vec![5, 1]);
        assert_eq!(shape(7), vec![7, 1]);
        assert_eq!(shape(9), vec![9, 1]);
        assert_eq!(shape(10), vec![10, 2, 1]);
        assert_eq!(shape(12), vec![12, 2, 1]);
        assert_eq!(shape(50), vec![50, 10, 1]);
        assert_eq!(shape(55), vec![55, 11, 2, 1]);
        assert_eq!(shape(1000), vec![1000, 200, 40, 8, 1]);
        let always = Cascade { synthesize: SynthesizeMode::Always, ..c.clone() };
        assert_eq!(always.shape(4), vec![4, 1]);
        assert_eq!(always.shape(7), vec![7, 1]);
        let never = Cascade { synthesize: SynthesizeMode::Never, ..c.clone() };
        assert_eq!(never.shape(12), vec![12]);
        let no_executive = Cascade { synthesize: SynthesizeMode::NoExecutive, ..c };
        assert_eq!(no_executive.shape(4), vec![4]);
        assert_eq!(no_executive.shape(12), vec![12, 2]);
        assert_eq!(no_executive.shape(55), vec![55, 11, 2]);
        assert_eq!("no-executive".parse::<SynthesizeMode>(), Ok(SynthesizeMode::NoExecutive));
        assert_eq!(serde_json::to_string(&SynthesizeMode::NoExecutive).unwrap(), "\"no-executive\"");
    }

    #[test]
    fn groups_are_contiguous_and_balanced() {
        for (len, k) in [(12, 2), (7, 1), (55, 11), (11, 2), (1000, 200), (203, 40), (9, 4)] {
            let groups = balanced_groups(len, k);
            assert_eq!(groups.len(), k);
            assert_eq!(groups[0].start, 0);
            assert_eq!(groups.last().unwrap().end, len);
            for w in groups.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }
}

//! Iterative refinement: draft → check → revise, until done or `max_iterations`.
//!
//! Iteration `i` writes a draft as step `{scope}/{ii}/draft` (`refine/01/draft`): the first
//! with the draft agent on the input, the later ones with the revise agent on a brief that
//! holds the input, the previous draft and the judge's critique. The draft is then checked:
//! 1. by the success predicate, if one is set ([`Refine::until`], or
//!    [`Refine::until_context`] over the draft and the run's context) — free, no call;
//! 2. by the LLM judge, if one is set ([`Refine::judge`]), as step `{scope}/{ii}/judge`. Its
//!    reply is a verdict on its first line (`DONE`, or `REVISE` and a critique).
//!
//! Each verdict is also said in the run's events as it comes: a `custom` event named
//! `judge_verdict`, with the iteration, the judge's step and whether it accepted.
//!
//! The loop stops at the first success — [`RefineStop::Predicate`] or [`RefineStop::Judge`],
//! with the step that decided — or after `max_iterations` drafts (default 3) with
//! [`RefineStop::MaxIterations`], whose [`CapHit`] is also recorded in the run as the draft
//! that did not run. Without a predicate or a judge there is nothing to wait for: it writes
//! exactly `max_iterations` drafts (`--refine N`) and stops with [`RefineStop::Fixed`], no cap
//! involved; the revise agent then gets no critique.
//!
//! ```
//! use belt_core::patterns::iterative::Refine;
//! let refine = Refine::llm("simulated/default")
//!     .judge("simulated/default", "under 200 words, with one concrete example")
//!     .until(|draft| draft.len() < 1200)
//!     .max_iterations(4);
//! // let done = refine.run(&ctx, "Explain borrowing in Rust").await?;
//! ```

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::llm::{CallHints, LlmRequest};
use crate::patterns::{Agent, CapHit, pad};
use crate::step::{StepId, StepSpec, Tier};

/// A success check over a draft and the run's context (`null` when the run has none).
type Predicate = Arc<dyn Fn(&str, &serde_json::Value) -> bool + Send + Sync>;

/// Drafts refined until a check passes (see the module docs).
#[derive(Clone)]
pub struct Refine {
    scope: String,
    draft: Agent,
    revise: Agent,
    until: Option<Predicate>,
    judge: Option<(Arc<str>, String)>,
    max_iterations: usize,
    /// Judge the last draft too (whose verdict can only say whether the cap was hit).
    judge_last: bool,
}

/// Drafts written at most, unless told otherwise.
pub const DEFAULT_MAX_ITERATIONS: usize = 3;

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum RefineStop {
    /// The success predicate held for the draft of this step.
    Predicate { at: StepId },
    /// The judge of this step said done.
    Judge { at: StepId },
    /// No check passed within `max_iterations` drafts.
    MaxIterations(CapHit),
    /// No check was set: the fixed number of drafts was written.
    Fixed { iterations: usize },
}

impl std::fmt::Display for RefineStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefineStop::Predicate { at } => write!(f, "the success predicate held for {at}"),
            RefineStop::Judge { at } => write!(f, "the judge accepted the draft at {at}"),
            RefineStop::MaxIterations(cap) => write!(f, "{cap}"),
            RefineStop::Fixed { iterations } => write!(f, "the {iterations} draft(s) asked for were written"),
        }
    }
}

/// One iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Iteration {
    pub draft_step: StepId,
    pub draft: Arc<str>,
    pub judge_step: Option<StepId>,
    /// The judge's reply when it asked for changes.
    pub critique: Option<Arc<str>>,
}

/// The loop's result: the last draft, and why it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Refinement {
    pub output: Arc<str>,
    pub stop: RefineStop,
    pub history: Vec<Iteration>,
}

impl Refinement {
    pub fn iterations(&self) -> usize {
        self.history.len()
    }

    /// True unless the cap stopped the loop before a check passed.
    pub fn accepted(&self) -> bool {
        !matches!(self.stop, RefineStop::MaxIterations(_))
    }
}

/// A step of the loop failed. The best draft so far, if any, is kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("refinement failed at iteration {iteration}: {error}")]
pub struct RefineError {
    pub iteration: usize,
    pub error: StepError,
    pub last_draft: Option<Arc<str>>,
    pub history: Vec<Iteration>,
}

impl Refine {
    /// Drafts by `draft` (on the input) and revisions by `revise` (on a brief with the
    /// previous draft and the critique), under the scope `refine`.
    pub fn new(draft: Agent, revise: Agent) -> Refine {
        Refine {
            scope: "refine".into(),
            draft,
            revise,
            until: None,
            judge: None,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            judge_last: true,
        }
    }

    /// Writer and reviser on `model`, with plain roles.
    pub fn llm(model: &str) -> Refine {
        Refine::new(
            Agent::llm(model, "You write clear, accurate, well-structured answers."),
            Agent::llm(model, "You revise drafts: apply every point of the critique, keep what works."),
        )
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Refine {
        self.scope = scope.into();
        self
    }

    /// Stop as soon as a draft satisfies `predicate`.
    pub fn until(mut self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) -> Refine {
        self.until = Some(Arc::new(move |draft, _| predicate(draft)));
        self
    }

    /// Stop as soon as `predicate` holds for a draft and the run's context
    /// ([`Ctx::context`]; `null` when the run has none): a loop until a context condition,
    /// e.g. a draft at least as long as the context's `min_words`.
    pub fn until_context(
        mut self,
        predicate: impl Fn(&str, &serde_json::Value) -> bool + Send + Sync + 'static,
    ) -> Refine {
        self.until = Some(Arc::new(predicate));
        self
    }

    /// An LLM judge on `model` that checks each draft against `criteria`.
    pub fn judge(mut self, model: &str, criteria: impl Into<String>) -> Refine {
        self.judge = Some((Arc::from(model), criteria.into()));
        self
    }

    /// Drafts written at most (at least 1).
    pub fn max_iterations(mut self, n: usize) -> Refine {
        self.max_iterations = n.max(1);
        self
    }

    /// A fixed number of critique-and-revise rounds (the cascade's `--refine N`): the judge
    /// still ends the loop early when it accepts a draft, but the last draft is not judged —
    /// no critique is paid for that nothing would use — and the loop then stops with
    /// [`RefineStop::Fixed`] instead of a cap.
    pub fn unjudged_last(mut self) -> Refine {
        self.judge_last = false;
        self
    }

    fn id(&self, iteration: usize, what: &str) -> StepId {
        StepId::new(format!("{}/{}/{what}", self.scope, pad(iteration, self.max_iterations + 1, 2)))
    }

    /// Refine a draft for `input`.
    pub async fn run(&self, ctx: &Ctx, input: impl Into<Arc<str>>) -> Result<Refinement, RefineError> {
        let input: Arc<str> = input.into();
        let mut history: Vec<Iteration> = Vec::new();
        let mut critique: Option<Arc<str>> = None;
        for i in 1..=self.max_iterations {
            let fail = |error: StepError, history: Vec<Iteration>| RefineError {
                iteration: i,
                error,
                last_draft: history.last().map(|h: &Iteration| h.draft.clone()),
                history,
            };
            let draft_step = self.id(i, "draft");
            let spec = StepSpec::new(draft_step.clone(), Tier::Agent);
            let draft = match history.last() {
                None => self.draft.run(ctx, spec, input.clone()).await,
                Some(prev) => {
                    let spec =
                        spec.inputs(prev.judge_step.iter().chain([&prev.draft_step]).cloned().collect());
                    let brief = revision_brief(&input, &prev.draft, critique.as_deref());
                    self.revise.run(ctx, spec, brief).await
                }
            };
            let draft = match draft {
                Ok(d) => d,
                Err(e) => return Err(fail(e, history)),
            };
            let mut round = Iteration {
                draft_step: draft_step.clone(),
                draft: draft.clone(),
                judge_step: None,
                critique: None,
            };
            let context = ctx.context().unwrap_or(&serde_json::Value::Null);
            if self.until.as_ref().is_some_and(|p| p(&draft, context)) {
                history.push(round);
                return Ok(self.done(history, RefineStop::Predicate { at: draft_step }));
            }
            if i == self.max_iterations && !self.judge_last {
                history.push(round);
                return Ok(self.done(history, RefineStop::Fixed { iterations: i }));
            }
            if let Some((model, criteria)) = &self.judge {
                let judge_step = self.id(i, "judge");
                let spec = StepSpec::new(judge_step.clone(), Tier::Agent).inputs(vec![draft_step.clone()]);
                let reply = match ctx.llm(spec, judge_request(model, criteria, &input, &draft)).await {
                    Ok(r) => r.text,
                    Err(e) => {
                        history.push(round);
                        return Err(fail(e, history));
                    }
                };
                round.judge_step = Some(judge_step.clone());
                let accepted = says_done(&reply);
                // Said as it happens, for live views of the loop (the result has the history).
                ctx.emit(
                    "judge_verdict",
                    serde_json::json!({"iteration": i, "judge": judge_step, "accepted": accepted}),
                );
                if accepted {
                    history.push(round);
                    return Ok(self.done(history, RefineStop::Judge { at: judge_step }));
                }
                round.critique = Some(reply.clone());
                critique = Some(reply);
            }
            history.push(round);
        }
        if self.until.is_none() && self.judge.is_none() {
            return Ok(self.done(history, RefineStop::Fixed { iterations: self.max_iterations }));
        }
        let next = StepSpec::new(self.id(self.max_iterations + 1, "draft"), Tier::Agent);
        let cap = CapHit::record(ctx, "max_iterations", self.max_iterations, next, self.revise.model());
        Ok(self.done(history, RefineStop::MaxIterations(cap)))
    }

    fn done(&self, history: Vec<Iteration>, stop: RefineStop) -> Refinement {
        let output = history.last().map(|h| h.draft.clone()).unwrap_or_else(|| Arc::from(""));
        Refinement { output, stop, history }
    }
}

/// What the revise agent is given.
pub fn revision_brief(input: &str, draft: &str, critique: Option<&str>) -> String {
    let mut brief = format!("Task:\n{}\n\nPrevious draft:\n{}\n", input.trim(), draft.trim());
    if let Some(c) = critique {
        brief.push_str(&format!("\nCritique:\n{}\n", c.trim()));
    }
    brief.push_str("\nWrite the improved draft in full.");
    brief
}

/// The judge's instruction on how to answer. (A provider that plays the judge offline, the
/// simulated one, knows a judge's request by its [`CallHints::judge`], not by these words.)
pub const JUDGE_VERDICT: &str = "If it fully meets them, reply with the single word DONE.";

fn judge_request(model: &Arc<str>, criteria: &str, input: &str, draft: &str) -> LlmRequest {
    let prompt = format!(
        "Judge whether the draft below meets the criteria.\n{JUDGE_VERDICT}\n\
         Otherwise reply REVISE on the first line, then the concrete changes it needs.\n\n\
         Criteria: {criteria}\n\nTask:\n{}\n\nDraft:\n{}\n",
        input.trim(),
        draft.trim()
    );
    LlmRequest::new(model, prompt)
        .system("You are a demanding reviewer. You accept only drafts that meet every criterion.")
        .temperature(0.0)
        .max_tokens(600)
        .hints(CallHints::judge())
}

/// True when a judge's reply opens with an acceptance (`DONE`, `APPROVED`, `ACCEPT`, `PASS`)
/// on its first non-empty line, ignoring Markdown emphasis and heading marks.
pub fn says_done(reply: &str) -> bool {
    let Some(first) = reply
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || "*#_`>:-.".contains(c)))
        .find(|l| !l.is_empty())
    else {
        return false;
    };
    let word: String = first.chars().take_while(|c| c.is_alphabetic()).collect::<String>().to_uppercase();
    matches!(word.as_str(), "DONE" | "APPROVED" | "ACCEPT" | "ACCEPTED" | "PASS")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::patterns::testkit::{record, within};
    use crate::result::{AgentStatus, RunStatus};
    use crate::testing::ScriptedProvider;

    /// Drafts that grow by one `+` per revision.
    fn growing() -> Refine {
        Refine::new(
            Agent::map(|_| Ok("+".into())),
            Agent::map(|brief| {
                let prev = brief.split("Previous draft:\n").nth(1).unwrap_or("").lines().next().unwrap_or("");
                Ok(format!("{prev}+"))
            }),
        )
    }

    #[tokio::test]
    async fn stops_when_the_predicate_holds() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let refine = growing().until(|d| d.len() >= 3).max_iterations(10);
        let (out, result) = within(&p, move |ctx| async move { refine.run(&ctx, "task").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "+++");
        assert_eq!(out.iterations(), 3);
        assert_eq!(out.stop, RefineStop::Predicate { at: StepId::new("refine/03/draft") });
        assert!(out.accepted());
        assert_eq!(result.status, RunStatus::Completed);
    }

    #[tokio::test]
    async fn loops_until_a_condition_on_the_run_context_holds() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let refine = growing()
            .until_context(|d, cx| cx["min_len"].as_u64().is_some_and(|n| d.len() as u64 >= n))
            .max_iterations(10);
        let context = serde_json::json!({"min_len": 4});
        let (out, _) = crate::patterns::testkit::within_context(&p, context, move |ctx| async move {
            refine.run(&ctx, "task").await
        })
        .await;
        let out = out.unwrap();
        assert_eq!((&*out.output, out.iterations()), ("++++", 4));
        assert_eq!(out.stop, RefineStop::Predicate { at: StepId::new("refine/04/draft") });
        // Without a context the condition never holds: the cap stops the loop.
        let refine = growing().until_context(|_, cx| !cx.is_null()).max_iterations(2);
        let (out, _) = within(&p, move |ctx| async move { refine.run(&ctx, "task").await }).await;
        assert!(matches!(out.unwrap().stop, RefineStop::MaxIterations(_)));
    }

    #[tokio::test]
    async fn stops_when_the_judge_says_done_and_feeds_its_critique_to_the_revision() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("refine/01/judge", "REVISE\n- add an example")
                .reply_for("refine/02/judge", "**DONE**"),
        );
        let refine = Refine::new(Agent::llm("t/m", "w"), Agent::map(|brief| Ok(brief.to_string())))
            .judge("t/m", "has an example")
            .max_iterations(5);
        let (out, result) = within(&p, move |ctx| async move { refine.run(&ctx, "task").await }).await;
        let out = out.unwrap();
        assert_eq!(out.stop, RefineStop::Judge { at: StepId::new("refine/02/judge") });
        assert_eq!(out.iterations(), 2);
        assert!(out.output.contains("Critique:\nREVISE\n- add an example"), "{}", out.output);
        assert!(out.output.contains("Previous draft:\nOutput of refine/01/draft."));
        assert_eq!(out.history[0].critique.as_deref(), Some("REVISE\n- add an example"));
        let inputs: Vec<&str> =
            record(&result, "refine/02/draft").inputs.iter().map(|s| s.as_str()).collect();
        assert_eq!(inputs, ["refine/01/judge", "refine/01/draft"]);
        assert_eq!(p.total_calls(), 3, "draft, judge, judge");
    }

    #[tokio::test]
    async fn the_cap_stops_the_loop_and_says_where() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for("refine/", "REVISE: not yet"));
        let refine = Refine::llm("t/m").judge("t/m", "perfect").max_iterations(3);
        let (out, result) = within(&p, move |ctx| async move { refine.run(&ctx, "task").await }).await;
        let out = out.unwrap();
        assert!(!out.accepted());
        let RefineStop::MaxIterations(cap) = &out.stop else { panic!("{:?}", out.stop) };
        assert_eq!((cap.cap.as_str(), cap.limit, cap.at.as_str()), ("max_iterations", 3, "refine/04/draft"));
        assert_eq!(out.stop.to_string(), "cap max_iterations = 3 reached; refine/04/draft not run");
        assert_eq!(p.total_calls(), 6);
        let skipped = record(&result, "refine/04/draft");
        assert_eq!(skipped.status, AgentStatus::Skipped);
        assert_eq!(skipped.error.as_deref(), Some("cap max_iterations = 3 reached; refine/04/draft not run"));
        assert_eq!(result.status, RunStatus::Partial, "{}", result.stop_reason);
    }

    #[tokio::test]
    async fn without_checks_it_revises_a_fixed_number_of_times() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let refine = growing().max_iterations(2);
        let (out, result) = within(&p, move |ctx| async move { refine.run(&ctx, "task").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "++");
        assert_eq!(result.status, RunStatus::Completed);
        assert_eq!(out.stop, RefineStop::Fixed { iterations: 2 });
        assert!(out.accepted(), "not stopped by a cap");
    }

    #[test]
    fn verdicts_are_read_from_the_first_line() {
        assert!(says_done("DONE"));
        assert!(says_done("\n## **Approved.**\nGreat work"));
        assert!(says_done("done - meets all criteria"));
        assert!(!says_done("REVISE\nDONE once you add X"));
        assert!(!says_done("Not done yet"));
        assert!(!says_done("DONEISH"));
        assert!(!says_done(""));
    }
}

//! The coder: the model writes a program for the task, a `run_code` tool runs it, the model
//! reads what happened and fixes it, until a run is clean or `max_rounds` (default 3) is
//! reached. The answer is the last program and its output, as a Markdown report.
//!
//! Round `k` is two recorded steps: `{scope}/round/0k/write`, the model's reply (its first
//! fenced code block is the program), and `{scope}/round/0k/run`, the tool's result for that
//! program. Both are in the run's journal, so a resumed run replays them: a program that ran
//! is never run again. A round whose reply has no code block runs nothing; the next round
//! asks again. The tool is passed in (belt-core knows no sandbox; belt-tools' `run_code` is
//! the real one), and its output counts as clean when its first line says exit code 0
//! ([`ran_clean`], the form belt-tools' sandbox report has) unless
//! [`Coder::succeeded_when`] says otherwise. A tool that cannot run code at all (no sandbox
//! on this machine) fails the run with its reason: there is nothing to fix in the code.
//!
//! Hitting the cap is explicit, as in every pattern: the stop is [`CoderStop::MaxRounds`],
//! the run's record has a skipped `{scope}/round/0N/write` saying so, and the report says the
//! program never ran clean.
//!
//! ```
//! use belt_core::patterns::coder::Coder;
//! use belt_core::{Tool, ToolOutput};
//!
//! let run_code = Tool::dynamic("run_code", "Run code.", serde_json::json!({"type": "object"}), |_| async {
//!     Ok(ToolOutput::new("status: exit code 0 (success)\n--- stdout ---\n42\n"))
//! });
//! let coder = Coder::new("simulated/default", run_code).max_rounds(4);
//! // As a whole run: belt_core::run(coder, Task::new("the 10th prime"), options);
//! // inside another pattern: coder.run(&ctx, "the 10th prime").await?
//! ```

use std::sync::Arc;

use async_trait::async_trait;

use crate::ctx::{Ctx, StepError};
use crate::event::PlanSource;
use crate::llm::{LlmRequest, ModelName};
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis, combine_outputs};
use crate::patterns::{CapHit, pad};
use crate::plan::{Subtask, Task};
use crate::step::{StepId, StepSpec, Tier};
use crate::tools::Tool;

/// Write-and-run rounds at most, unless told otherwise.
pub const DEFAULT_MAX_ROUNDS: usize = 3;

/// Characters of a run's output handed back to the model: its start and, mostly, its end
/// (where a traceback's cause is).
const FEEDBACK_HEAD: usize = 2_000;
const FEEDBACK_TAIL: usize = 6_000;

type Check = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Code written, run and fixed until it runs clean (see the module docs).
#[derive(Clone)]
pub struct Coder {
    scope: String,
    model: Arc<str>,
    run_code: Tool,
    language: String,
    max_rounds: usize,
    succeeded: Check,
}

impl std::fmt::Debug for Coder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coder")
            .field("scope", &self.scope)
            .field("model", &self.model)
            .field("tool", &self.run_code.name())
            .field("language", &self.language)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum CoderStop {
    /// The run of this step was clean.
    Clean { at: StepId },
    /// No run was clean within `max_rounds`.
    MaxRounds(CapHit),
}

/// One round: what the model wrote, and what running it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub write_step: StepId,
    /// The program, or `None` when the reply had no code block (then nothing ran).
    pub code: Option<String>,
    pub run_step: Option<StepId>,
    /// The tool's output (empty when nothing ran).
    pub output: String,
}

/// The loop's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Coded {
    pub stop: CoderStop,
    pub attempts: Vec<Attempt>,
    language: String,
}

impl Coded {
    /// True when the last program ran clean.
    pub fn clean(&self) -> bool {
        matches!(self.stop, CoderStop::Clean { .. })
    }

    /// The last program that was written, if any.
    pub fn code(&self) -> Option<&str> {
        self.attempts.iter().rev().find_map(|a| a.code.as_deref())
    }

    /// What its run gave.
    pub fn output(&self) -> &str {
        self.attempts.iter().rev().find(|a| a.code.is_some()).map_or("", |a| &a.output)
    }

    /// The answer: the final program and its output as Markdown sections, and how it ended.
    pub fn report(&self) -> String {
        let mut out = String::from("## Code\n\n");
        match self.code() {
            Some(code) => out.push_str(&fenced(&self.language, code)),
            None => out.push_str("_The model wrote no code block._\n"),
        }
        if self.code().is_some() {
            out.push_str("\n## Output\n\n");
            out.push_str(&fenced("text", self.output()));
        }
        out.push('\n');
        out.push_str(&match &self.stop {
            CoderStop::Clean { .. } => format!("Ran cleanly in round {}.\n", self.attempts.len()),
            CoderStop::MaxRounds(cap) => {
                format!(
                    "Did not run cleanly within {} rounds ({cap}); the last attempt is above.\n",
                    cap.limit
                )
            }
        });
        out
    }
}

impl Coder {
    /// A coder on `model` (`provider/model`) that runs its programs with `run_code`: a tool
    /// taking `{"language", "code", "stdin"}`, as belt-tools' `run_code` does. Python by
    /// default, scope `coder`.
    pub fn new(model: impl ModelName, run_code: Tool) -> Coder {
        Coder {
            scope: "coder".into(),
            model: model.into_model(),
            run_code,
            language: "python".into(),
            max_rounds: DEFAULT_MAX_ROUNDS,
            succeeded: Arc::new(ran_clean),
        }
    }

    /// The language the programs are written in, as the tool names it (`python`, `sh`).
    pub fn language(mut self, language: impl Into<String>) -> Coder {
        self.language = language.into();
        self
    }

    /// Rounds at most (at least 1).
    pub fn max_rounds(mut self, rounds: usize) -> Coder {
        self.max_rounds = rounds.max(1);
        self
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Coder {
        self.scope = scope.into();
        self
    }

    /// When a tool output counts as a clean run (instead of [`ran_clean`]).
    pub fn succeeded_when(mut self, check: impl Fn(&str) -> bool + Send + Sync + 'static) -> Coder {
        self.succeeded = Arc::new(check);
        self
    }

    fn id(&self, round: usize, what: &str) -> StepId {
        StepId::new(format!("{}/round/{}/{what}", self.scope, pad(round, self.max_rounds + 1, 2)))
    }

    /// Write, run and fix a program for `task`.
    pub async fn run(&self, ctx: &Ctx, task: &str) -> Result<Coded, StepError> {
        let mut attempts: Vec<Attempt> = Vec::new();
        for round in 1..=self.max_rounds {
            let write_step = self.id(round, "write");
            let inputs = attempts.last().map(|a| a.run_step.iter().chain([&a.write_step]).cloned().collect());
            let spec = StepSpec::new(write_step.clone(), Tier::Agent).inputs(inputs.unwrap_or_default());
            let reply = ctx.llm(spec, self.request(task, attempts.last())).await?;
            let Some(code) = extract_code(&reply.text, &self.language) else {
                attempts.push(Attempt { write_step, code: None, run_step: None, output: String::new() });
                continue;
            };
            let run_step = self.id(round, "run");
            let output = self.run_program(ctx, &run_step, &write_step, &code).await?;
            let clean = (self.succeeded)(&output);
            attempts.push(Attempt { write_step, code: Some(code), run_step: Some(run_step.clone()), output });
            if clean {
                return Ok(self.done(attempts, CoderStop::Clean { at: run_step }));
            }
        }
        let next = StepSpec::new(self.id(self.max_rounds + 1, "write"), Tier::Agent);
        let cap = CapHit::record(ctx, "max_rounds", self.max_rounds, next, &self.model);
        Ok(self.done(attempts, CoderStop::MaxRounds(cap)))
    }

    fn done(&self, attempts: Vec<Attempt>, stop: CoderStop) -> Coded {
        Coded { stop, attempts, language: self.language.clone() }
    }

    /// Run `code` with the tool as a recorded effect under the tool's policy
    /// ([`Ctx::tool_effect`]: its timeout, retries where safe; the journal — a resumed run
    /// replays the output instead of running the program again). A tool error — the code
    /// could not be run at all, the sandbox is missing — fails the step: there is nothing
    /// to show the model.
    async fn run_program(
        &self,
        ctx: &Ctx,
        step: &StepId,
        write: &StepId,
        code: &str,
    ) -> Result<String, StepError> {
        let arguments = serde_json::json!({"language": self.language, "code": code, "stdin": null});
        let spec = StepSpec::new(step.clone(), Tier::Agent).inputs(vec![write.clone()]);
        let input = (self.run_code.name(), &arguments);
        let work = || {
            let running = self.run_code.call(arguments.clone());
            async move { running.await.map(|out| out.content) }
        };
        ctx.step_with(spec, &input, ctx.tool_effect(&self.run_code), work).await
    }

    /// The model's request for the next round: the task, and after a round, its program
    /// and what running it gave.
    fn request(&self, task: &str, last: Option<&Attempt>) -> LlmRequest {
        let system = format!(
            "You write {lang} programs that solve the task and print their results. Answer with the \
             complete program in one fenced code block (```{lang}). It runs in a sandbox: no network, no \
             files but a scratch directory, limited time and memory; print everything the answer needs.",
            lang = self.language
        );
        LlmRequest::new(&self.model, fix_brief(task, &self.language, last))
            .system(system)
            .max_tokens(4096)
            .hints(crate::hints::CallHints::code(task, &self.language))
    }

    /// The plan of a whole run: the task as one subtask.
    fn subtask_scope(&self, subtask: &Subtask) -> Coder {
        if subtask.id == "code" {
            self.clone()
        } else {
            self.clone().scope(format!("{}/{}", self.scope, subtask.id))
        }
    }
}

/// What the model is asked in a round: the task, and after a round its program and the
/// run's output (its start and end when long).
pub fn fix_brief(task: &str, language: &str, last: Option<&Attempt>) -> String {
    let mut brief = format!("Task:\n{}\n", task.trim());
    match last {
        None => {}
        Some(Attempt { code: None, .. }) => brief.push_str(
            "\nYour previous answer had no fenced code block. Write the complete program in one fenced code block.\n",
        ),
        Some(Attempt { code: Some(code), output, .. }) => {
            brief.push_str(&format!("\nYour program:\n{}", fenced(language, code)));
            brief.push_str(&format!("\nIt did not run cleanly. Running it gave:\n{}", fenced("text", &clip(output))));
            brief.push_str("\nFind the cause and write the corrected program, complete, in one fenced code block.\n");
        }
    }
    brief
}

/// The belt-tools sandbox's report of a clean run opens with `status: exit code 0`.
pub fn ran_clean(output: &str) -> bool {
    output
        .lines()
        .next()
        .is_some_and(|l| l.trim() == "status: exit code 0" || l.starts_with("status: exit code 0 "))
}

/// The program in a reply: the first fenced block tagged with `language` (or an alias:
/// `py`, `python3`; `bash`, `shell`), else the first untagged one, else the first one. A
/// block left open runs to the end of the reply.
pub fn extract_code(reply: &str, language: &str) -> Option<String> {
    let own = [language];
    let aliases: &[&str] = match language {
        "python" => &["python", "py", "python3"],
        "sh" => &["sh", "bash", "shell", "posix"],
        _ => &own,
    };
    let blocks = fenced_blocks(reply);
    let pick = blocks
        .iter()
        .find(|(info, _)| aliases.iter().any(|a| info.eq_ignore_ascii_case(a)))
        .or_else(|| blocks.iter().find(|(info, _)| info.is_empty()))
        .or_else(|| blocks.first())?;
    let code = pick.1.trim_matches('\n');
    (!code.trim().is_empty()).then(|| code.to_string())
}

/// Fenced blocks (``` or ~~~, three or more) as (info word, body).
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, String)> = None; // fence, info, body
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                let fence: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
                if fence.len() >= 3 && fence.chars().all(|c| c == fence.as_bytes()[0] as char) {
                    let info = trimmed[fence.len()..].split_whitespace().next().unwrap_or("").to_string();
                    open = Some((fence, info, String::new()));
                }
            }
            Some((fence, info, body)) => {
                if trimmed.starts_with(fence.as_str())
                    && trimmed.trim_start_matches(['`', '~']).trim().is_empty()
                {
                    blocks.push((std::mem::take(info), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    if let Some((_, info, body)) = open {
        blocks.push((info, body));
    }
    blocks
}

/// `text` in a fence longer than any backtick run inside it.
fn fenced(info: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let body = text.trim_end_matches('\n');
    format!("{fence}{info}\n{body}\n{fence}\n")
}

/// A long output cut in the middle: its start and its end, with a note.
fn clip(output: &str) -> String {
    let total = output.chars().count();
    if total <= FEEDBACK_HEAD + FEEDBACK_TAIL {
        return output.to_string();
    }
    let head: String = output.chars().take(FEEDBACK_HEAD).collect();
    let tail: String = output.chars().skip(total - FEEDBACK_TAIL).collect();
    format!("{head}\n[... {} characters left out ...]\n{tail}", total - FEEDBACK_HEAD - FEEDBACK_TAIL)
}

/// The coder as a whole run (`--pattern coder`): the task is the one subtask; a plan given
/// by the caller runs each subtask in its own scope (`coder/{id}/round/01/write`).
#[async_trait]
impl Orchestrator for Coder {
    fn name(&self) -> &str {
        "coder"
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n]
    }

    async fn decompose(&self, _ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        Ok(Plan {
            subtasks: vec![Subtask::new("code", task.brief().into_owned())],
            source: PlanSource::Orchestrator,
        })
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        _task: &Task,
        subtask: &Subtask,
        _deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let coded = self.subtask_scope(subtask).run(ctx, &subtask.description).await?;
        Ok(AgentOutput {
            subtask_id: subtask.id.clone(),
            step: step.id.clone(),
            text: Arc::from(coded.report()),
            model: self.model.clone(),
        })
    }

    async fn synthesize(
        &self,
        _ctx: &Ctx,
        _task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        match results {
            [Ok(out)] => Ok(Synthesis { text: out.text.to_string() }),
            [Err(e)] => Err(e.clone()),
            _ => Ok(Synthesis { text: combine_outputs(plan, results) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{options, record, within};
    use crate::result::{AgentStatus, RunStatus};
    use crate::run::run;
    use crate::store::{MemoryStore, RunStore};
    use crate::testing::ScriptedProvider;
    use crate::tools::ToolOutput;

    /// A stand-in for the sandbox: code with `1/0` fails with a traceback, other code prints 42.
    fn fake_run_code(calls: Arc<AtomicU32>) -> Tool {
        Tool::dynamic("run_code", "Run code.", serde_json::json!({"type": "object"}), move |args| {
            calls.fetch_add(1, Ordering::SeqCst);
            let code = args["code"].as_str().unwrap_or_default().to_string();
            async move {
                if args["language"] != "python" {
                    return Err(crate::EffectError::new("only python here"));
                }
                Ok(ToolOutput::new(if code.contains("1/0") {
                    "status: exit code 1\n--- stdout ---\n(empty)\n--- stderr ---\nZeroDivisionError: division by zero\n"
                } else {
                    "status: exit code 0 (success)\n--- stdout ---\n42\n--- stderr ---\n(empty)\n"
                }))
            }
        })
    }

    const BROKEN: &str = "Here you go:\n```python\nprint(1/0)\n```\n";
    const FIXED: &str = "Fixed:\n```python\nprint(6 * 7)\n```\n";

    #[tokio::test]
    async fn a_failing_program_is_fixed_in_the_next_round() {
        let calls = Arc::new(AtomicU32::new(0));
        let p = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("coder/round/01/write", BROKEN)
                .reply_for("coder/round/02/write", FIXED),
        );
        let coder = Coder::new("t/m", fake_run_code(calls.clone()));
        let (out, result) = within(&p, move |ctx| async move { coder.run(&ctx, "print 42").await }).await;
        let out = out.unwrap();
        assert_eq!(out.stop, CoderStop::Clean { at: StepId::new("coder/round/02/run") });
        assert_eq!(
            (out.attempts.len(), out.code(), calls.load(Ordering::SeqCst)),
            (2, Some("print(6 * 7)"), 2)
        );
        assert!(out.attempts[0].output.contains("ZeroDivisionError"));
        let report = out.report();
        assert!(
            report.starts_with(
                "## Code\n\n```python\nprint(6 * 7)\n```\n\n## Output\n\n```text\nstatus: exit code 0"
            ),
            "{report}"
        );
        assert!(
            report.ends_with("--- stdout ---\n42\n--- stderr ---\n(empty)\n```\n\nRan cleanly in round 2.\n"),
            "{report}"
        );
        let inputs: Vec<&str> =
            record(&result, "coder/round/02/write").inputs.iter().map(|s| s.as_str()).collect();
        assert_eq!(inputs, ["coder/round/01/run", "coder/round/01/write"]);
        assert_eq!(result.status, RunStatus::Completed);
    }

    #[tokio::test]
    async fn the_round_cap_stops_a_program_that_never_runs_clean() {
        let calls = Arc::new(AtomicU32::new(0));
        let p = Arc::new(ScriptedProvider::new("t").reply_for("coder/round/", BROKEN));
        let coder = Coder::new("t/m", fake_run_code(calls.clone()));
        let (out, result) = within(&p, move |ctx| async move { coder.run(&ctx, "print 42").await }).await;
        let out = out.unwrap();
        let CoderStop::MaxRounds(cap) = &out.stop else { panic!("{:?}", out.stop) };
        assert_eq!((cap.cap.as_str(), cap.limit, cap.at.as_str()), ("max_rounds", 3, "coder/round/04/write"));
        assert_eq!((calls.load(Ordering::SeqCst), p.total_calls()), (3, 3));
        assert!(
            out.report().contains("Did not run cleanly within 3 rounds (cap max_rounds = 3 reached"),
            "{}",
            out.report()
        );
        assert_eq!(record(&result, "coder/round/04/write").status, AgentStatus::Skipped);
        assert_eq!(result.status, RunStatus::Partial);
    }

    #[tokio::test]
    async fn a_reply_without_code_runs_nothing_and_is_asked_again() {
        let calls = Arc::new(AtomicU32::new(0));
        let p = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("coder/round/01/write", "I would compute it.")
                .reply_for("coder/round/02/write", FIXED),
        );
        let coder = Coder::new("t/m", fake_run_code(calls.clone()));
        let (out, result) = within(&p, move |ctx| async move { coder.run(&ctx, "print 42").await }).await;
        let out = out.unwrap();
        assert!(out.clean() && out.attempts[0].code.is_none() && out.attempts[0].run_step.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(result.agents.iter().all(|a| a.step.as_str() != "coder/round/01/run"));
    }

    #[tokio::test]
    async fn a_tool_that_cannot_run_code_fails_the_run_with_its_reason() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for("coder/", FIXED));
        let coder = Coder::new("t/m", fake_run_code(Arc::new(AtomicU32::new(0)))).language("sh");
        let r = run(coder, Task::new("print 42"), options(&p)).await.unwrap().result().await;
        assert_eq!(r.status, RunStatus::Failed);
        let rec = record(&r, "coder/round/01/run");
        assert_eq!(
            (rec.status, rec.error.as_deref()),
            (AgentStatus::Failed, Some("coder/round/01/run: only python here"))
        );
    }

    #[tokio::test]
    async fn a_resumed_run_replays_programs_that_ran_instead_of_running_them_again() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let calls = Arc::new(AtomicU32::new(0));
        // First attempt: round 1 writes and runs the broken program, then round 2's model call fails for good.
        let failing = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("coder/round/01/write", BROKEN)
                .always_fail("coder/round/02/write", LlmError::InvalidRequest("bad".into())),
        );
        let mut o = options(&failing).with_store(store.clone());
        o.run_id = Some("coder-resume".into());
        let coder = Coder::new("t/m", fake_run_code(calls.clone()));
        let first = run(coder.clone(), Task::new("print 42"), o).await.unwrap().result().await;
        assert_eq!(first.status, RunStatus::Failed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let healthy = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("coder/round/01/write", BROKEN)
                .reply_for("coder/round/02/write", FIXED),
        );
        let mut o = options(&healthy).with_store(store);
        o.run_id = Some("coder-resume".into());
        let second = run(coder, Task::new("print 42"), o).await.unwrap().result().await;
        assert_eq!(second.status, RunStatus::Completed, "{}", second.stop_reason);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "round 1's program did not run again; round 2's ran once"
        );
        assert_eq!((healthy.calls("coder/round/01/write"), healthy.calls("coder/round/02/write")), (0, 1));
        assert!(record(&second, "coder/round/01/run").outcome.replayed);
        let output = second.final_output.unwrap();
        assert!(
            output.starts_with("## Code\n\n```python\nprint(6 * 7)\n```")
                && output.ends_with("Ran cleanly in round 2.\n"),
            "{output}"
        );
    }

    #[test]
    fn code_is_the_block_in_the_language_else_an_untagged_one() {
        let reply = "Text\n```text\nnot code\n```\n```\nuntagged\n```\n```py\nprint(1)\n```";
        assert_eq!(extract_code(reply, "python").as_deref(), Some("print(1)"));
        assert_eq!(extract_code(reply, "sh").as_deref(), Some("untagged"));
        assert_eq!(extract_code("~~~bash\necho ``hi``\n~~~", "sh").as_deref(), Some("echo ``hi``"));
        assert_eq!(
            extract_code("```python\nprint(2)\n", "python").as_deref(),
            Some("print(2)"),
            "an open block"
        );
        assert_eq!(extract_code("no code here", "python"), None);
        assert_eq!(extract_code("```python\n\n```", "python"), None);
    }

    #[test]
    fn the_fix_brief_has_the_program_and_the_end_of_a_long_output() {
        let output = format!("status: exit code 1\n{}\nTraceback: the cause", "x".repeat(20_000));
        let last = Attempt {
            write_step: StepId::new("coder/round/01/write"),
            code: Some("print(```)".into()),
            run_step: Some(StepId::new("coder/round/01/run")),
            output,
        };
        let brief = fix_brief("Do it", "python", Some(&last));
        assert!(
            brief.starts_with("Task:\nDo it\n\nYour program:\n````python\nprint(```)\n````\n"),
            "{brief}"
        );
        assert!(brief.contains("characters left out") && brief.contains("Traceback: the cause"));
        assert!(brief.len() < 9_000);
        assert!(
            ran_clean("status: exit code 0 (success)\n")
                && !ran_clean("status: exit code 0x")
                && !ran_clean("exit code 0")
        );
    }
}

//! What a person sees while a run works: live bars per tier on a terminal, one line per
//! major event otherwise. Both read the same events as every other consumer.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use belt_core::{AgentRecord, AgentStatus, Event, EventKind, PlanSource, StepError, Tier};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars (stderr is a terminal).
    Live,
    /// One line per major event on stderr.
    Lines,
    Quiet,
}

/// Counts for one tier level.
#[derive(Default)]
struct Level {
    total: u64,
    running: u64,
    done: u64,
    failed: u64,
    /// Steps in flight when the run was cancelled: not failures of their own.
    cancelled: u64,
    skipped: u64,
    retries: u64,
    bar: Option<ProgressBar>,
}

pub struct Progress {
    mode: Mode,
    multi: Option<MultiProgress>,
    header: Option<ProgressBar>,
    levels: BTreeMap<usize, Level>,
    started: Instant,
    total_steps: u64,
    ended_steps: u64,
    /// Steps in flight when the run was cancelled.
    cancelled: u64,
    tokens: u64,
    cost: belt_report::Cost,
    /// Steps cut off at their token cap so far (the header says so).
    truncated: u64,
    simulated: bool,
    /// A resumed run: its first event says so.
    resumed: bool,
    /// The pattern runs steps of its own (a workflow file's, `iterative`'s) inside one
    /// subtask the engine plans for it: shown as those steps, not as a plan and workers.
    own_steps: bool,
    /// From `run_started` to `plan_ready`: the header says so, with its clock running.
    planning: bool,
}

impl Progress {
    /// `resumed`: the run continues a recorded one (`belt resume`).
    pub fn new(mode: Mode, resumed: bool) -> Self {
        let (multi, header) = if mode == Mode::Live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            crate::diagnostics::set_bars(Some(multi.clone()));
            let header = multi.add(ProgressBar::new_spinner());
            // The clock is drawn on every tick, not only when an event comes: planning is one
            // long call, and a clock that only moved with events stood at 0.0s through it.
            // `{prefix}` holds what follows the clock (the ETA, "simulated").
            let clock = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
            };
            header.set_style(
                ProgressStyle::with_template("{spinner} {msg} · {clock}{prefix}")
                    .expect("static template")
                    .with_key("clock", clock),
            );
            header.enable_steady_tick(Duration::from_millis(100));
            header.set_message("starting…");
            (Some(multi), Some(header))
        } else {
            (None, None)
        };
        Progress {
            mode,
            multi,
            header,
            levels: BTreeMap::new(),
            started: Instant::now(),
            total_steps: 0,
            ended_steps: 0,
            cancelled: 0,
            tokens: 0,
            cost: belt_report::Cost::default(),
            truncated: 0,
            simulated: false,
            resumed,
            own_steps: false,
            planning: false,
        }
    }

    /// The live bars, to hide while something else uses the terminal.
    pub fn bars(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    pub fn on_event(&mut self, e: &Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        // A pattern's own steps all count on its one bar.
        let level = e.step.as_ref().map(|s| if self.own_steps { 0 } else { level_of(s.as_str()) });
        match &e.kind {
            EventKind::RunStarted { pattern, agents, concurrency, simulated, .. } => {
                self.simulated = *simulated;
                let agents = agents.map(|a| format!(", {}", plural(a, "agent"))).unwrap_or_default();
                let sim = if *simulated {
                    " — simulated provider, outputs are not from a real model"
                } else {
                    ""
                };
                let verb = if self.resumed { "resumed" } else { "started" };
                self.line(format!(
                    "run {} {verb}: {pattern}{agents}, concurrency {concurrency}{sim}",
                    e.run_id
                ));
                self.planning = true;
                self.status("planning: the decomposer writes the subtasks…".into());
                if let (Some(h), true) = (&self.header, self.simulated) {
                    h.set_prefix(" · simulated");
                }
                return;
            }
            EventKind::PlanReady { source: PlanSource::Orchestrator, .. } => {
                self.planning = false;
                // The plan is the engine's wrapper around the pattern's own steps, whose
                // number is not known ahead (routes, loops): no plan line, no ETA.
                self.own_steps = true;
                self.status("running…".into());
            }
            EventKind::PlanReady { subtasks, shape, source } => {
                self.planning = false;
                self.total_steps = shape.iter().sum::<usize>() as u64;
                let shape = shape.iter().map(usize::to_string).collect::<Vec<_>>().join(" → ");
                let source = format!("{source:?}").to_lowercase();
                self.line(format!("plan ready ({source}): {}; tiers {shape}", plural(*subtasks, "subtask")));
            }
            EventKind::PlanFallback { reason, templated } => {
                let subtasks = plural(*templated, "template subtask");
                self.line(format!("plan fallback: {reason}; {subtasks} used"));
            }
            EventKind::StrategyChosen { strategy, auto } => {
                let by = if *auto { "chosen by the decomposer" } else { "as asked" };
                self.line(format!("strategy: {strategy} ({by})"));
            }
            EventKind::PlanRejected { reason, attempt } => {
                let next = if *attempt == 1 { "asking once more" } else { "the template fills in" };
                self.line(format!("plan rejected: {reason}; {next}"));
            }
            EventKind::PlanRepaired { reason, .. } => self.line(format!("plan repaired: {reason}")),
            EventKind::TierStarted { tier, level, count } => {
                let (name, count) =
                    if self.own_steps { ("steps".to_string(), 0) } else { (tier_name(tier, *level), *count) };
                if !self.own_steps {
                    self.line(format!("{name}: {count} started"));
                }
                let bar = self.multi.as_ref().map(|m| {
                    let bar = m.add(ProgressBar::new(count as u64));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>16} [{bar:30.cyan/blue}] {pos}/{len} {msg}")
                            .expect("static template")
                            .progress_chars("█▉▊▋▌▍▎▏ "),
                    );
                    bar.set_prefix(name);
                    bar
                });
                let key = if *tier == Tier::Executive { usize::MAX } else { *level };
                let l = self.levels.entry(key).or_default();
                l.total = count as u64;
                l.bar = bar;
            }
            EventKind::TierCompleted { tier, level, succeeded, failed, skipped } => {
                let skipped = if *skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
                if !self.own_steps {
                    let name = tier_name(tier, *level);
                    self.line(format!("{name}: {succeeded} done, {failed} failed{skipped}"));
                }
                let key = if *tier == Tier::Executive { usize::MAX } else { *level };
                if let Some(bar) = self.levels.get(&key).and_then(|l| l.bar.as_ref()) {
                    bar.finish();
                }
            }
            EventKind::StepStarted { .. } => {
                if let Some(l) = level.and_then(|k| self.levels.get_mut(&k)) {
                    l.running += 1;
                    if self.own_steps
                        && let Some(bar) = &l.bar
                    {
                        bar.inc_length(1);
                    }
                }
            }
            EventKind::StepRetrying { attempt, error, delay_ms, .. } => {
                let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                self.line(format!("{step}: attempt {attempt} failed ({error}); retrying in {delay_ms} ms"));
                if let Some(l) = level.and_then(|k| self.levels.get_mut(&k)) {
                    l.retries += 1;
                }
            }
            EventKind::StepCompleted { outcome, tier, .. } => {
                if self.own_steps {
                    let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                    let secs = outcome.duration_ms as f64 / 1000.0;
                    self.line(format!("{step} ({tier}) done in {secs:.1}s"));
                }
                self.tokens += outcome.usage.total();
                self.cost.known_usd += outcome.cost_usd;
                self.cost.unpriced_calls += u64::from(outcome.unpriced);
                self.end_step(level, |l| l.done += 1, true);
            }
            // One line for all of them when the run finishes: a cancelled run of a thousand
            // workers in flight is not a thousand lines.
            EventKind::StepFailed { error_kind, .. } if error_kind == CANCELLED => {
                self.cancelled += 1;
                self.end_step(level, |l| l.cancelled += 1, true);
            }
            EventKind::StepFailed { error, .. } => {
                let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                self.line(format!("{step} failed: {error}"));
                self.end_step(level, |l| l.failed += 1, true);
            }
            EventKind::StepSkipped { .. } => self.end_step(level, |l| l.skipped += 1, false),
            EventKind::StepTruncated { model, max_tokens, .. } => {
                let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                self.truncated += 1;
                self.line(format!(
                    "warning: {step}: {model} stopped at the token cap ({max_tokens} tokens); its output is cut off"
                ));
            }
            EventKind::StepFallback { from, to, error, .. } => {
                let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                self.line(format!("{step}: {from} failed ({error}); falling back to {to}"));
            }
            EventKind::BreakerOpened { model, failures } => {
                self.line(format!(
                    "breaker opened: {model} failed {failures} times in a row; its calls fail fast"
                ));
            }
            EventKind::BreakerClosed { model } => self.line(format!("breaker closed: {model} answers again")),
            // Streamed text is for live views of one agent, not for the progress lines.
            EventKind::StepDelta { .. } => return,
            EventKind::BudgetWarning { limit, used, max } => {
                let share = if *max > 0.0 { used / max * 100.0 } else { 100.0 };
                self.line(format!("budget warning: {limit} at {used:.4} of {max:.4} ({share:.0}% used)"));
            }
            EventKind::BudgetExhausted { limit, used, max, needed } => self.line(format!(
                "budget exhausted: {limit} cap {max:.4}, {used:.4} used, next call needs up to {needed:.4}; \
                 no new calls start"
            )),
            EventKind::UsageOverreported { model, reported, booked, stops_run, .. } => {
                let step = e.step.as_ref().map(|s| s.to_string()).unwrap_or_default();
                let then = if *stops_run { "; the run stops" } else { "" };
                self.line(format!(
                    "{step}: {model} reported {} input and {} output tokens, more than the request \
                     allows; booked at {} and {}{then}",
                    reported.input_tokens, reported.output_tokens, booked.input_tokens, booked.output_tokens
                ));
            }
            EventKind::Degraded { degradation } => self.line(format!("degraded: {degradation}")),
            EventKind::DocumentWritten { format, path } => {
                self.line(format!("wrote {format} report: {path}"))
            }
            EventKind::RunFinished { status, stop_reason, .. } => {
                if self.cancelled > 0 {
                    let steps = plural(self.cancelled as usize, "step");
                    self.line(format!("{steps} in flight cancelled; what completed is recorded"));
                }
                self.line(format!("run finished: {status} ({stop_reason})"));
                if let Some(h) = &self.header {
                    h.finish_and_clear();
                }
                return;
            }
            // An orchestrator's own event: its name and data, on one line.
            EventKind::Custom { name, data } => {
                let data = if data.is_null() {
                    String::new()
                } else {
                    format!(" {}", shorten(&data.to_string(), 200))
                };
                self.line(format!("{name}:{data}"));
            }
            // The terminal's question shows the request; only a default taken is news.
            EventKind::HumanAnswered { id, by, .. }
                if *by != belt_core::patterns::hitl::AnsweredBy::Human =>
            {
                self.line(format!("{id}: no answer ({}); its default was taken", by.as_str()));
            }
            // Kinds added to the engine later have no progress line yet.
            _ => return,
        }
        self.refresh_header();
    }

    /// A step ended: update its level's counts and bar.
    fn end_step(&mut self, level: Option<usize>, f: impl FnOnce(&mut Level), was_running: bool) {
        self.ended_steps += 1;
        if let Some(l) = level.and_then(|k| self.levels.get_mut(&k)) {
            f(l);
            if was_running {
                l.running = l.running.saturating_sub(1);
            }
            if let Some(bar) = &l.bar {
                bar.set_position(l.done + l.failed + l.cancelled + l.skipped);
                let mut msg = format!("running {}", l.running);
                if l.failed > 0 {
                    msg.push_str(&format!(" · failed {}", l.failed));
                }
                if l.cancelled > 0 {
                    msg.push_str(&format!(" · cancelled {}", l.cancelled));
                }
                if l.skipped > 0 {
                    msg.push_str(&format!(" · skipped {}", l.skipped));
                }
                if l.retries > 0 {
                    msg.push_str(&format!(" · retries {}", l.retries));
                }
                bar.set_message(msg);
            }
        }
    }

    fn refresh_header(&self) {
        let Some(h) = &self.header else { return };
        if self.planning {
            // The planning message stays until the plan is ready (the decomposer's own
            // step events come first).
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let truncated =
            if self.truncated > 0 { format!(" · {} truncated", self.truncated) } else { String::new() };
        h.set_message(format!("{} tokens · {}{truncated}", human(self.tokens), self.cost));
        let mut after = String::new();
        // ETA from the pace so far; the decomposition step is not in total_steps.
        let done = self.ended_steps.saturating_sub(1);
        if self.total_steps > 0 && done > 0 && done < self.total_steps {
            let eta = elapsed / done as f64 * (self.total_steps - done) as f64;
            after.push_str(&format!(" · ETA {eta:.0}s"));
        }
        if self.simulated {
            after.push_str(" · simulated");
        }
        h.set_prefix(after);
    }

    fn status(&self, msg: String) {
        if let Some(h) = &self.header {
            h.set_message(msg);
        }
    }

    fn line(&self, text: String) {
        match self.mode {
            Mode::Lines => {
                let _ = writeln!(std::io::stderr(), "belt: {text}");
            }
            Mode::Live => {
                // Only the lines that matter stay on screen above the bars.
                if (text.contains("failed:")
                    || text.starts_with("budget")
                    || text.starts_with("plan fallback"))
                    && let Some(m) = &self.multi
                {
                    let _ = m.println(format!("belt: {text}"));
                }
            }
            Mode::Quiet => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(m) = &self.multi {
            for l in self.levels.values() {
                if let Some(b) = &l.bar {
                    b.finish();
                }
            }
            let _ = m.clear();
            crate::diagnostics::set_bars(None);
        }
    }
}

/// The `error_kind` of a step that was in flight when its run was cancelled.
const CANCELLED: &str = "cancelled";

/// Whether a step that did not complete was stopped by the run's cancellation (Ctrl-C,
/// `cancel_run`) rather than failing: the engine records it as failed with the cancellation
/// as its error, and a person reading the summary must not take it for a broken step.
pub fn was_cancelled(a: &AgentRecord) -> bool {
    a.status == AgentStatus::Failed
        && a.error.as_deref() == Some(StepError::Cancelled { step: a.step.clone() }.to_string().as_str())
}

fn tier_name(tier: &Tier, level: usize) -> String {
    match tier {
        Tier::Worker => "workers".into(),
        Tier::Synthesizer => format!("synthesizers L{level}"),
        Tier::Executive => "executive".into(),
        other => other.to_string(),
    }
}

/// The progress level of a step id: workers 0, `synth/L/..` L, the executive last.
fn level_of(step: &str) -> usize {
    if step.starts_with("worker/") {
        0
    } else if let Some(rest) = step.strip_prefix("synth/") {
        rest.split('/').next().and_then(|l| l.parse().ok()).unwrap_or(1)
    } else if step == "executive" {
        usize::MAX
    } else {
        usize::MAX - 1
    }
}

/// `1 subtask`, `12 subtasks`.
fn plural(n: usize, word: &str) -> String {
    belt_report::words::count(n as u64, word)
}

/// 12345 → "12.3k".
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// `s` on one line, at most `n` characters (an ellipsis marks a cut): for table cells.
pub(crate) fn shorten(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n { format!("{}…", one.chars().take(n - 1).collect::<String>()) } else { one }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_numbers() {
        assert_eq!(level_of("worker/007"), 0);
        assert_eq!(level_of("synth/2/003"), 2);
        assert_eq!(level_of("executive"), usize::MAX);
        assert_eq!(human(999), "999");
        assert_eq!(human(12_345), "12.3k");
        assert_eq!(human(2_500_000), "2.50M");
        assert_eq!(
            (plural(1, "subtask"), plural(0, "step"), plural(12, "step")),
            ("1 subtask".into(), "0 steps".into(), "12 steps".into())
        );
    }
}

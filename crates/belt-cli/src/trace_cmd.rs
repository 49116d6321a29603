//! `belt runs trace ID`: a run's steps as a text waterfall, read from the store, so a user
//! sees where the time went without any collector.
//!
//! Built from the run's recorded events (they exist for unfinished runs too), with each
//! step's timing split the way the events allow:
//!
//! - **queued**: from the step's start (its `step_completed` time less its `duration_ms`)
//!   to its `step_started`, which the engine emits once the step holds a concurrency
//!   permit and its budget reservation;
//! - **retry waits**: the `delay_ms` of each `step_retrying`;
//! - **limits**: the `limit_wait_ms` of the step's outcome — waiting for the provider's
//!   limits (concurrent calls, requests and tokens per minute, a 429 pause, an open breaker);
//! - **call**: the rest — the provider's time.
//!
//! ```text
//! worker/003             |    ··████                     |   1.2s  queued 0.3s
//!   round/01             |      ██                       |   0.4s
//!   round/01/tool/1      |        █                      |   0.1s  tool
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::{RunResult, StepId};
use serde::Serialize;

/// One step's timings, in milliseconds since the run's first event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TraceStep {
    pub step: String,
    /// The step it is drawn under (an agent's rounds and tool calls are under the agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub depth: usize,
    pub tier: String,
    /// `call`, `round`, `tool`, `agent` (an agent drawn around its rounds) or `work`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// `completed`, `failed`, `skipped`, `running` (no end recorded), `replayed`, `cached`.
    pub status: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub queued_ms: u64,
    pub retry_wait_ms: u64,
    /// Waiting for the provider's limits (concurrent calls, requests or tokens per minute,
    /// a 429 pause, an open breaker), between `step_started` and the call.
    pub limit_wait_ms: u64,
    /// In the provider: what is left.
    pub call_ms: u64,
    pub attempts: u32,
    pub retries: Vec<TraceRetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A failed attempt that was tried again.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TraceRetry {
    pub attempt: u32,
    pub error_kind: String,
    pub at_ms: u64,
    pub delay_ms: u64,
}

/// Per tier: how many steps, and where their time went (summed over the steps).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TierTotal {
    pub tier: String,
    pub steps: usize,
    pub retries: usize,
    /// From the tier's first start to its last end.
    pub span_ms: u64,
    pub queued_ms: u64,
    pub retry_wait_ms: u64,
    pub limit_wait_ms: u64,
    pub call_ms: u64,
}

/// A run's waterfall: what `--json` prints, and what the text is drawn from.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Trace {
    pub run_id: String,
    pub duration_ms: u64,
    pub steps: Vec<TraceStep>,
    pub tiers: Vec<TierTotal>,
}

fn ms_between(from: &chrono::DateTime<chrono::Utc>, to: &chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from((*to - *from).num_milliseconds()).unwrap_or(0)
}

/// What kind of step an id names (the conventions of agents' tool loops).
fn kind_of(step: &str, model: &str) -> &'static str {
    match step.find("/round/") {
        Some(at) if step[at..].contains("/tool/") => "tool",
        Some(_) => "round",
        None if model.is_empty() => "work",
        None => "call",
    }
}

/// The step a round or tool call belongs to: the id before `/round/`.
fn agent_of(step: &str) -> Option<&str> {
    step.find("/round/").map(|at| &step[..at])
}

impl Trace {
    /// The waterfall of `run_id` from its events; `result` (a finished run's) fills in steps
    /// whose events are missing.
    pub fn build(run_id: &str, events: &[Arc<Event>], result: Option<&RunResult>) -> Trace {
        let Some(origin) = events.first().map(|e| e.ts) else {
            return Trace::from_result(run_id, result);
        };
        let last = events.last().map_or(0, |e| ms_between(&origin, &e.ts));
        let mut steps: BTreeMap<StepId, TraceStep> = BTreeMap::new();
        for e in events {
            let Some(id) = &e.step else { continue };
            let at = ms_between(&origin, &e.ts);
            let s = steps.entry(id.clone()).or_insert_with(|| TraceStep {
                step: id.to_string(),
                start_ms: at,
                end_ms: at,
                status: "running".into(),
                ..TraceStep::default()
            });
            apply(s, &e.kind, at);
        }
        let mut steps: Vec<TraceStep> = steps.into_values().collect();
        for s in &mut steps {
            if s.status == "running" {
                s.end_ms = last.max(s.start_ms);
            }
            s.kind = kind_of(&s.step, &s.model);
            let waits = s.queued_ms + s.retry_wait_ms + s.limit_wait_ms;
            s.call_ms = (s.end_ms - s.start_ms).saturating_sub(waits);
        }
        finish(run_id, steps, result.map_or(last, |r| r.duration_ms.max(last)))
    }

    /// Without events: the result's agent records (start and duration only).
    fn from_result(run_id: &str, result: Option<&RunResult>) -> Trace {
        let Some(r) = result else { return Trace { run_id: run_id.into(), ..Trace::default() } };
        let steps = r
            .agents
            .iter()
            .map(|a| TraceStep {
                step: a.step.to_string(),
                tier: a.tier.to_string(),
                kind: kind_of(a.step.as_str(), &a.outcome.model),
                model: a.outcome.model.to_string(),
                status: format!("{:?}", a.status).to_lowercase(),
                start_ms: a.started_ms,
                end_ms: a.started_ms + a.outcome.duration_ms,
                call_ms: a.outcome.duration_ms,
                attempts: a.outcome.attempts,
                error: a.error.clone(),
                ..TraceStep::default()
            })
            .collect();
        finish(run_id, steps, r.duration_ms)
    }
}

/// One event of a step, applied to its timings.
fn apply(s: &mut TraceStep, kind: &EventKind, at: u64) {
    match kind {
        EventKind::StepStarted { tier, model } => {
            s.tier = tier.to_string();
            s.model = model.to_string();
            s.start_ms = s.start_ms.min(at);
            s.attempts = s.attempts.max(1);
        }
        EventKind::StepRetrying { tier, attempt, error_kind, delay_ms, .. } => {
            s.tier = tier.to_string();
            s.retries.push(TraceRetry {
                attempt: *attempt,
                error_kind: error_kind.clone(),
                at_ms: at,
                delay_ms: *delay_ms,
            });
            s.retry_wait_ms += delay_ms;
        }
        EventKind::StepFallback { to, .. } => s.model = to.to_string(),
        EventKind::StepCompleted { tier, outcome, .. } => {
            s.tier = tier.to_string();
            if !outcome.model.is_empty() {
                s.model = outcome.model.to_string();
            }
            // The step began before `step_started` by the time it spent queued.
            let began = at.saturating_sub(outcome.duration_ms);
            s.queued_ms = s.start_ms.saturating_sub(began);
            s.start_ms = s.start_ms.min(began);
            s.end_ms = at;
            s.attempts = outcome.attempts;
            s.limit_wait_ms = u64::from(outcome.limit_wait_ms);
            s.status = if outcome.replayed {
                "replayed"
            } else if outcome.cached {
                "cached"
            } else {
                "completed"
            }
            .into();
        }
        EventKind::StepFailed { tier, error_kind, attempts, .. } => {
            s.tier = tier.to_string();
            (s.end_ms, s.attempts, s.status) = (at, *attempts, "failed".into());
            s.error = Some(error_kind.clone());
        }
        EventKind::StepSkipped { tier, reason } => {
            s.tier = tier.to_string();
            (s.end_ms, s.status) = (at, "skipped".into());
            s.error = Some(reason.clone());
        }
        _ => {}
    }
}

/// Steps arranged as a tree (agents drawn around their rounds and tool calls), depth-first
/// by start time, with the tiers' totals.
fn finish(run_id: &str, mut steps: Vec<TraceStep>, duration_ms: u64) -> Trace {
    let tiers = totals(&steps);
    let mut index: HashMap<String, usize> =
        steps.iter().enumerate().map(|(i, s)| (s.step.clone(), i)).collect();
    // An agent with a tool loop has no events of its own: a row spanning its rounds.
    for i in 0..steps.len() {
        let Some(agent) = agent_of(&steps[i].step).map(str::to_string) else { continue };
        let (start, end, tier) = (steps[i].start_ms, steps[i].end_ms, steps[i].tier.clone());
        let at = *index.entry(agent.clone()).or_insert_with(|| {
            let row = TraceStep {
                step: agent,
                kind: "agent",
                tier,
                start_ms: start,
                end_ms: end,
                ..TraceStep::default()
            };
            steps.push(row);
            steps.len() - 1
        });
        let a = &mut steps[at];
        (a.start_ms, a.end_ms) = (a.start_ms.min(start), a.end_ms.max(end));
        steps[i].parent = Some(steps[at].step.clone());
    }
    for s in steps.iter_mut().filter(|s| s.kind == "agent") {
        s.status = "completed".into();
        s.call_ms = s.end_ms - s.start_ms;
    }
    let order = |s: &TraceStep| (s.start_ms, s.step.clone());
    let mut roots: Vec<&TraceStep> = steps.iter().filter(|s| s.parent.is_none()).collect();
    roots.sort_by_key(|s| order(s));
    let mut out = Vec::with_capacity(steps.len());
    for root in roots {
        out.push(root.clone());
        let mut children: Vec<&TraceStep> =
            steps.iter().filter(|s| s.parent.as_deref() == Some(&root.step)).collect();
        children.sort_by_key(|s| order(s));
        out.extend(children.into_iter().map(|c| TraceStep { depth: 1, ..c.clone() }));
    }
    let duration_ms = out.iter().map(|s| s.end_ms).max().unwrap_or(0).max(duration_ms);
    Trace { run_id: run_id.into(), duration_ms, steps: out, tiers }
}

/// Per tier, in the order tiers first appear.
fn totals(steps: &[TraceStep]) -> Vec<TierTotal> {
    let mut tiers: Vec<(TierTotal, u64, u64)> = Vec::new();
    for s in steps {
        let at = match tiers.iter().position(|(t, ..)| t.tier == s.tier) {
            Some(at) => at,
            None => {
                let total = TierTotal { tier: s.tier.clone(), ..TierTotal::default() };
                tiers.push((total, s.start_ms, s.end_ms));
                tiers.len() - 1
            }
        };
        let (t, first, last) = &mut tiers[at];
        t.steps += 1;
        t.retries += s.retries.len();
        t.queued_ms += s.queued_ms;
        t.retry_wait_ms += s.retry_wait_ms;
        t.limit_wait_ms += s.limit_wait_ms;
        t.call_ms += s.call_ms;
        (*first, *last) = ((*first).min(s.start_ms), (*last).max(s.end_ms));
    }
    tiers
        .into_iter()
        .map(|(mut t, first, last)| {
            t.span_ms = last - first;
            t
        })
        .collect()
}

/// The columns the waterfall may use: the terminal's width, or 80 when stdout is not one.
pub fn width() -> usize {
    if !std::io::stdout().is_terminal() {
        return 80;
    }
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct it is given.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col >= 40 { usize::from(size.ws_col) } else { 80 }
}

/// `1.2s`, `340ms`.
fn human_ms(ms: u64) -> String {
    if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", ms as f64 / 1000.0) }
}

/// The bar of one step: `·` queued, `~` waiting to retry (where each wait was), `█` in
/// the call, on an axis of `cols` columns for `total` ms. Every step gets at least one
/// column of call, so a step too short to see still shows where it ran.
pub fn bar(s: &TraceStep, total: u64, cols: usize) -> String {
    let total = total.max(1);
    let col = |ms: u64| ((ms.min(total) as u128 * cols as u128) / total as u128) as usize;
    let start = col(s.start_ms).min(cols.saturating_sub(1));
    let end = col(s.end_ms).clamp(start + 1, cols.max(start + 1));
    let mut line = vec![' '; cols.max(end)];
    line[start..end].fill('█');
    // The call keeps at least its last column.
    let queued_end = col(s.start_ms + s.queued_ms).clamp(start, end - 1);
    line[start..queued_end].fill('·');
    for r in &s.retries {
        let from = col(r.at_ms).clamp(queued_end, end - 1);
        let to = col(r.at_ms + r.delay_ms).clamp(from, end - 1);
        line[from..to].fill('~');
    }
    line.into_iter().collect()
}

/// What a step's line says after its bar.
fn notes(s: &TraceStep) -> String {
    let mut notes = Vec::new();
    if s.status != "completed" {
        notes.push(s.status.clone());
    }
    if s.kind == "tool" {
        notes.push("tool".into());
    }
    if s.queued_ms > 0 {
        notes.push(format!("queued {}", human_ms(s.queued_ms)));
    }
    if s.limit_wait_ms > 0 {
        notes.push(format!("limits {}", human_ms(s.limit_wait_ms)));
    }
    if !s.retries.is_empty() {
        let kinds: Vec<&str> = s.retries.iter().map(|r| r.error_kind.as_str()).collect();
        let n = belt_core::words::count_irregular(s.retries.len() as u64, "retry", "retries");
        notes.push(format!("{n} ({}), waited {}", kinds.join(", "), human_ms(s.retry_wait_ms)));
    }
    if let Some(e) = &s.error {
        notes.push(crate::progress::shorten(e, 40));
    }
    notes.join(" · ")
}

/// `line` within `width` columns, an ellipsis marking the cut.
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The waterfall as text, `width` columns wide.
pub fn render(t: &Trace, width: usize) -> String {
    let label = |s: &TraceStep| match (&s.parent, s.depth) {
        (Some(p), d) if d > 0 => {
            format!("{}{}", "  ".repeat(d), s.step.strip_prefix(&format!("{p}/")).unwrap_or(&s.step))
        }
        _ => s.step.clone(),
    };
    let labels: Vec<String> = t.steps.iter().map(label).collect();
    let name_cols = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4).clamp(4, 32);
    // name, the bar's edges, the duration, and room for the notes (cut to fit beyond it).
    let cols = width.saturating_sub(name_cols + 3 + 9 + 24).max(10);
    let mut out = format!(
        "run {} · {} · {} steps\n`·` queued  `~` waiting to retry  `█` in the call\n\n",
        t.run_id,
        human_ms(t.duration_ms),
        t.steps.iter().filter(|s| s.kind != "agent").count()
    );
    for (s, l) in t.steps.iter().zip(&labels) {
        let l: String = l.chars().take(name_cols).collect();
        let line = format!(
            "{l:<name_cols$} |{}| {:>7}  {}",
            bar(s, t.duration_ms, cols),
            human_ms(s.end_ms - s.start_ms),
            notes(s)
        );
        out.push_str(&cut(line.trim_end(), width));
        out.push('\n');
    }
    out.push('\n');
    // Summed over each tier's steps; `span` is its first start to its last end.
    out.push_str(&format!(
        "{:<12} {:>5} {:>8} {:>9} {:>8} {:>8} {:>11} {:>7}\n",
        "tier", "steps", "span", "in calls", "queued", "limits", "retry waits", "retries"
    ));
    for tier in &t.tiers {
        out.push_str(&format!(
            "{:<12} {:>5} {:>8} {:>9} {:>8} {:>8} {:>11} {:>7}\n",
            tier.tier,
            tier.steps,
            human_ms(tier.span_ms),
            human_ms(tier.call_ms),
            human_ms(tier.queued_ms),
            human_ms(tier.limit_wait_ms),
            human_ms(tier.retry_wait_ms),
            tier.retries,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, start: u64, end: u64) -> TraceStep {
        TraceStep {
            step: id.into(),
            start_ms: start,
            end_ms: end,
            status: "completed".into(),
            ..TraceStep::default()
        }
    }

    #[test]
    fn bars_sit_on_one_axis() {
        let s = TraceStep { queued_ms: 20, ..step("w", 0, 100) };
        assert_eq!(bar(&s, 100, 10), "··████████");
        let late = step("w", 50, 100);
        assert_eq!(bar(&late, 100, 10), "     █████");
        // A step too short to see still gets a column, and never past the axis.
        assert_eq!(bar(&step("w", 99, 100), 100, 10), "         █");
        assert_eq!(bar(&step("w", 100, 100), 100, 10), "         █");
        let retry = TraceRetry { attempt: 1, at_ms: 30, delay_ms: 40, ..TraceRetry::default() };
        let retried = TraceStep { retry_wait_ms: 40, retries: vec![retry], ..step("w", 0, 100) };
        assert_eq!(bar(&retried, 100, 10), "███~~~~███");
        for s in [s, late, retried] {
            assert_eq!(bar(&s, 100, 10).chars().count(), 10);
        }
    }

    #[test]
    fn rounds_and_tools_are_drawn_under_their_agent() {
        let mut steps = vec![
            TraceStep { tier: "worker".into(), model: "m".into(), ..step("worker/002", 5, 30) },
            TraceStep { tier: "worker".into(), model: "m".into(), ..step("worker/001/round/01", 0, 10) },
            TraceStep { tier: "worker".into(), ..step("worker/001/round/01/tool/1", 10, 12) },
            TraceStep { tier: "worker".into(), model: "m".into(), ..step("worker/001/round/02", 12, 20) },
        ];
        for s in &mut steps {
            s.kind = kind_of(&s.step, &s.model);
        }
        let t = finish("r", steps, 0);
        let rows: Vec<(&str, usize)> = t.steps.iter().map(|s| (s.step.as_str(), s.depth)).collect();
        assert_eq!(
            rows,
            [
                ("worker/001", 0),
                ("worker/001/round/01", 1),
                ("worker/001/round/01/tool/1", 1),
                ("worker/001/round/02", 1),
                ("worker/002", 0),
            ]
        );
        assert_eq!((t.steps[0].start_ms, t.steps[0].end_ms, t.steps[0].kind), (0, 20, "agent"));
        assert_eq!(t.steps[2].kind, "tool");
        assert_eq!(t.duration_ms, 30);
        // The tier's totals count the steps, not the agent row drawn around them.
        assert_eq!(t.tiers[0].steps, 4);
        let text = render(&t, 80);
        assert!(text.contains("\n  round/01/tool/1 "), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }
}

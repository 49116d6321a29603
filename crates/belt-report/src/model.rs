//! What every format shows, computed once from a [`RunResult`]: the title, the metadata,
//! the sections in order, the tiers of the chart, the failures and the cited sources.
//! Renderers only lay this out.

use std::collections::{BTreeMap, HashMap};

use belt_core::{AgentRecord, AgentStatus, RunResult, Subtask, Tier};

use crate::md::{self, Block};

/// Level of the heading model text is placed under: "Final synthesis", a level-2 section.
pub const FINAL_PARENT: u8 = 2;
/// Level of the heading a step's output is placed under: the step's own, level 3.
pub const STEP_PARENT: u8 = 3;

pub struct Model<'a> {
    pub r: &'a RunResult,
    pub title: String,
    /// (label, value), plain text.
    pub meta: Vec<(&'static str, String)>,
    pub final_blocks: Option<Vec<Block>>,
    /// Intermediate syntheses (synthesizer tier), in step order.
    pub syntheses: Vec<Section<'a>>,
    /// Workers with their subtask.
    pub workers: Vec<Section<'a>>,
    /// Steps of other tiers (agents of other patterns, custom tiers).
    pub others: Vec<Section<'a>>,
    /// Steps that failed, were skipped, needed more than one attempt or were cut off at
    /// their token cap.
    pub failures: Vec<&'a AgentRecord>,
    pub groups: Vec<Group<'a>>,
    /// The per-agent table ([`AGENT_HEAD`]), every cell as text.
    pub agent_rows: Vec<[String; 8]>,
    pub sources: Vec<Source>,
    /// Rows of the plan appendix shown (all of them unless [`Model::limit`] cut it).
    pub plan_rows: usize,
    /// What [`Model::limit`] left out.
    pub omitted: Omitted,
}

/// Counts of what a size-limited report leaves out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Omitted {
    pub syntheses: usize,
    pub workers: usize,
    pub others: usize,
    pub failures: usize,
    pub sources: usize,
    pub plan: usize,
}

/// How much a paged format takes before it leaves sections out. Typst keeps a laid-out
/// document in memory (about 1 MiB per page), and docx-rs the whole XML tree, so a run of
/// 100,000 agents would otherwise exhaust memory at the very end of a paid run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Model text, in bytes, over all step sections (the final synthesis always fits).
    pub text_bytes: usize,
    /// Step sections.
    pub sections: usize,
    /// Rows of each long table (failures, plan) and sources.
    pub rows: usize,
}

/// One step's section: its heading, the facts under it and its output.
pub struct Section<'a> {
    pub heading: String,
    /// What the heading shows of the step (a worker's subtask): a first heading of the
    /// output that says it again is left out.
    pub title: String,
    pub agent: &'a AgentRecord,
    pub facts: Vec<String>,
    /// Why there is no output, when there is none.
    pub note: String,
}

impl Section<'_> {
    /// The output, parsed when a renderer needs it (so a large run never holds every
    /// parsed output at once).
    pub fn blocks(&self) -> Option<Vec<Block>> {
        self.text().map(|o| md::parse(&o, STEP_PARENT))
    }

    /// The output as shown: without a first heading that repeats [`Section::title`].
    pub fn text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.agent.output.as_deref().map(|o| crate::without_title(o, &self.title))
    }

    fn text_len(&self) -> usize {
        self.agent.output.as_ref().map_or(0, |o| o.len())
    }
}

/// Steps of one tier (synthesizers split by level), in run order: a column group of the
/// chart and a row of the tier table.
pub struct Group<'a> {
    pub name: String,
    /// Index into the chart palette.
    pub color: usize,
    pub agents: Vec<&'a AgentRecord>,
}

impl Group<'_> {
    /// Steps that ended with `status`; `Failed` counts timed-out steps too (a failure for
    /// lack of time), which the step lists name as such.
    pub fn count(&self, status: AgentStatus) -> usize {
        if status == AgentStatus::Failed {
            return self.agents.iter().filter(|a| a.status.is_failure()).count();
        }
        self.agents.iter().filter(|a| a.status == status).count()
    }
    pub fn input_tokens(&self) -> u64 {
        self.agents.iter().map(|a| a.outcome.usage.input_tokens).sum()
    }
    pub fn output_tokens(&self) -> u64 {
        self.agents.iter().map(|a| a.outcome.usage.output_tokens).sum()
    }
    pub fn cost(&self) -> crate::Cost {
        crate::Cost::of_steps(self.agents.iter().map(|a| &a.outcome))
    }
    /// From the first start to the last end, in milliseconds.
    pub fn wall_ms(&self) -> u64 {
        let first = self.agents.iter().map(|a| a.started_ms).min().unwrap_or(0);
        let last = self.agents.iter().map(|a| a.started_ms + a.outcome.duration_ms).max().unwrap_or(0);
        last.saturating_sub(first)
    }
    pub fn longest_ms(&self) -> u64 {
        self.agents.iter().map(|a| a.outcome.duration_ms).max().unwrap_or(0)
    }
}

/// The head of the per-agent table: totals per agent (tier) of
/// [`belt_core::result::agent_totals`].
pub const AGENT_HEAD: [&str; 8] =
    ["Agent", "Steps", "Success", "Calls", "Tokens in", "Tokens out", "Cost", "Busy time"];

/// The per-agent table's rows: the run's recorded totals, or (a result recorded before
/// they were) the same computed from its steps.
pub fn agent_rows(r: &RunResult) -> Vec<[String; 8]> {
    let computed;
    let totals = if r.agent_totals.is_empty() {
        computed = belt_core::result::agent_totals(&r.agents);
        &computed
    } else {
        &r.agent_totals
    };
    totals
        .iter()
        .map(|t| {
            [
                t.agent.clone(),
                t.steps.to_string(),
                format!("{:.0}%", t.success_rate * 100.0),
                t.calls.to_string(),
                t.input_tokens.to_string(),
                t.output_tokens.to_string(),
                crate::Cost::new(t.cost_usd, t.unpriced_calls).to_string(),
                seconds(t.duration_ms),
            ]
        })
        .collect()
}

/// A URL cited by the outputs.
pub struct Source {
    pub url: String,
    /// The link's text when it says more than the URL.
    pub title: Option<String>,
    /// Steps whose output cites it (`final` for the final output), in order.
    pub cited_by: Vec<String>,
}

impl<'a> Model<'a> {
    pub fn new(r: &'a RunResult) -> Self {
        let final_blocks = r.final_output.as_deref().map(|t| md::parse(t, FINAL_PARENT));
        let section = |agent: &'a AgentRecord, heading: String, title: String| {
            let note = match (&agent.output, &agent.error) {
                (Some(_), _) => String::new(),
                (None, Some(e)) => format!("No output: {}", one_line(e)),
                (None, None) => "No output.".to_string(),
            };
            Section { heading, title, agent, facts: facts(agent), note }
        };
        // Step ids are the headings of syntheses (`synth/1/002`), as scripts reading the
        // Markdown expect.
        // A tool loop's last round stands for its agent; its other rounds and its tool
        // calls are not sections of their own.
        let internal = loop_internals(r);
        let shown = || r.agents.iter().filter(|a| !internal.contains(a.step.as_str()));
        let syntheses = shown()
            .filter(|a| a.tier == Tier::Synthesizer)
            .map(|a| section(a, md::clean(a.step.as_str()), String::new()))
            .collect();
        let workers = shown()
            .filter(|a| a.tier == Tier::Worker)
            .enumerate()
            .map(|(i, a)| {
                let description = r.plan.get(i).map_or("", |s: &Subtask| s.description.as_str());
                section(a, format!("{}. {}", i + 1, one_line(description)), one_line(description))
            })
            .collect();
        let others = shown()
            .filter(|a| matches!(a.tier, Tier::Agent | Tier::Custom(_)))
            .map(|a| section(a, md::clean(a.step.as_str()), String::new()))
            .collect();
        let failures = r
            .agents
            .iter()
            .filter(|a| a.status != AgentStatus::Completed || a.outcome.attempts > 1 || a.outcome.truncated())
            .collect();
        let mut model = Model {
            r,
            title: title(r),
            meta: meta(r),
            final_blocks,
            syntheses,
            workers,
            others,
            failures,
            groups: groups(r),
            agent_rows: agent_rows(r),
            sources: Vec::new(),
            plan_rows: r.plan.len(),
            omitted: Omitted::default(),
        };
        model.sources = sources(&model);
        model
    }

    /// Every section with model text, in report order.
    pub fn sections(&self) -> impl Iterator<Item = &Section<'a>> {
        self.syntheses.iter().chain(&self.workers).chain(&self.others)
    }

    /// Keep the report within `limits`: step sections in report order while they fit,
    /// then the first rows of long tables. [`Model::omitted`] says what was left out.
    pub fn limit(&mut self, limits: Limits) {
        let (mut bytes, mut count) = (0usize, 0usize);
        let mut keep = |sections: &mut Vec<Section<'a>>| {
            let n = sections
                .iter()
                .take_while(|s| {
                    bytes += s.text_len();
                    count += 1;
                    bytes <= limits.text_bytes && count <= limits.sections
                })
                .count();
            let omitted = sections.len() - n;
            sections.truncate(n);
            omitted
        };
        self.omitted.syntheses = keep(&mut self.syntheses);
        self.omitted.workers = keep(&mut self.workers);
        self.omitted.others = keep(&mut self.others);
        let cap = |len: usize| len.saturating_sub(limits.rows);
        self.omitted.failures = cap(self.failures.len());
        self.failures.truncate(limits.rows);
        self.omitted.sources = cap(self.sources.len());
        self.sources.truncate(limits.rows);
        self.omitted.plan = cap(self.plan_rows);
        self.plan_rows = self.plan_rows.min(limits.rows);
    }
}

/// The document title: the task on one line, at most 100 characters.
pub fn title(r: &RunResult) -> String {
    let t = md::clean(&one_line(&r.task));
    if t.chars().count() > 100 { format!("{}…", t.chars().take(100).collect::<String>()) } else { t }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `1 worker`, `12 workers`; a workflow's own tier (an agent's id) as `writer × 3`.
fn count_of(n: usize, tier: &str) -> String {
    match tier {
        "decomposer" | "worker" | "synthesizer" | "executive" | "agent" if n != 1 => format!("{n} {tier}s"),
        "decomposer" | "worker" | "synthesizer" | "executive" | "agent" => format!("{n} {tier}"),
        _ => format!("{tier} × {n}"),
    }
}

fn meta(r: &RunResult) -> Vec<(&'static str, String)> {
    let mut models: BTreeMap<(u8, String), Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<(u8, String), usize> = BTreeMap::new();
    for a in &r.agents {
        let key = (a.tier.rank(), a.tier.to_string());
        *counts.entry(key.clone()).or_default() += 1;
        let m = models.entry(key).or_default();
        if !a.outcome.model.is_empty() && !m.iter().any(|x| **x == *a.outcome.model) {
            m.push(a.outcome.model.to_string());
        }
    }
    let models = models
        .iter()
        .map(|((_, tier), m)| format!("{tier}: {}", if m.is_empty() { "—".into() } else { m.join(", ") }))
        .collect::<Vec<_>>()
        .join("; ");
    let agents = counts.iter().map(|((_, t), n)| count_of(*n, t)).collect::<Vec<_>>().join(", ");
    let mut rows = vec![("Run", r.run_id.clone())];
    if let Some(t) = r.started_at {
        rows.push(("Date", t.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    }
    rows.push(("Pattern", r.pattern.clone()));
    rows.push(("Models", models));
    rows.push(("Agents", agents));
    rows.push(("Status", format!("{} ({})", r.status, r.stop_reason)));
    rows.push(("Duration", seconds(r.duration_ms)));
    rows.push((
        "Tokens",
        match (r.usage.cache_read_tokens, r.usage.cache_write_tokens) {
            (0, 0) => {
                format!("{} in, {} out, {} calls", r.usage.input_tokens, r.usage.output_tokens, r.usage.calls)
            }
            (read, write) => format!(
                "{} in ({read} read from and {write} written to prompt caches), {} out, {} calls",
                r.usage.input_tokens, r.usage.output_tokens, r.usage.calls
            ),
        },
    ));
    rows.push((
        "Cost",
        format!("{}{}", crate::Cost::of_run(r), if r.simulated { " (nominal, simulated)" } else { "" }),
    ));
    if let Some(note) = truncated_note(r) {
        rows.push(("Truncated", note));
    }
    // Each fall of the cascade and each model switch under load, in order.
    for d in &r.degradations {
        rows.push(("Degraded", d.to_string()));
    }
    rows.into_iter().map(|(k, v)| (k, md::clean(&one_line(&v)))).collect()
}

/// The mark of a step whose output was cut off at its token cap.
pub const TRUNCATED: &str = "truncated: stopped at its token cap";

/// "2 steps stopped at their token cap, output cut off: worker/003, executive" (at most
/// 10 named), when any step was cut off: the report's and the CLI's one sentence for it.
pub fn truncated_note(r: &RunResult) -> Option<String> {
    let steps: Vec<&str> =
        r.agents.iter().filter(|a| a.outcome.truncated()).map(|a| a.step.as_str()).collect();
    if steps.is_empty() {
        return None;
    }
    let named = steps.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    let more = if steps.len() > 10 { format!(" and {} more", steps.len() - 10) } else { String::new() };
    let their = if steps.len() == 1 { "its" } else { "their" };
    Some(format!(
        "{} stopped at {their} token cap, output cut off: {named}{more}",
        crate::words::count(steps.len() as u64, "step")
    ))
}

/// What went wrong with a step the failures table lists: its error, or its truncation.
pub fn problem(a: &AgentRecord) -> String {
    match (&a.error, a.outcome.truncated()) {
        (Some(e), _) => one_line(e),
        (None, true) => TRUNCATED.to_string(),
        (None, false) => String::new(),
    }
}

pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub fn status_str(a: &AgentRecord) -> &'static str {
    match a.status {
        AgentStatus::Completed => "completed",
        AgentStatus::Failed => "failed",
        AgentStatus::Skipped => "skipped",
        AgentStatus::TimedOut => "timed out",
        _ => "other",
    }
}

/// The facts shown under a step's heading.
pub fn facts(a: &AgentRecord) -> Vec<String> {
    let mut f = vec![
        a.step.to_string(),
        status_str(a).to_string(),
        if a.outcome.model.is_empty() { "—".to_string() } else { a.outcome.model.to_string() },
    ];
    if a.status == AgentStatus::Completed {
        f.push(format!("{} + {} tokens", a.outcome.usage.input_tokens, a.outcome.usage.output_tokens));
        let cost = crate::Cost::of_steps([&a.outcome]);
        // Among the facts a bare "unknown" would not say of what.
        f.push(if cost.is_known() { cost.to_string() } else { format!("cost {cost}") });
        f.push(seconds(a.outcome.duration_ms));
    }
    if a.outcome.truncated() {
        f.push(TRUNCATED.into());
    }
    if a.outcome.attempts > 1 {
        f.push(format!("{} attempts", a.outcome.attempts));
    }
    match a.inputs.as_slice() {
        [] => {}
        [one] => f.push(format!("input {one}")),
        [first, .., last] => f.push(format!("inputs {first} … {last} ({})", a.inputs.len())),
    }
    if a.outcome.replayed {
        f.push("replayed".into());
    }
    if a.outcome.cached {
        f.push("cached".into());
    }
    f.into_iter().map(|s| md::clean(&s)).collect()
}

/// Tiers in report order; synthesizers are split by level (`synth/LEVEL/…`).
fn groups(r: &RunResult) -> Vec<Group<'_>> {
    // (tier rank, synthesis level, name) -> steps
    type Key = (u8, u32, String);
    let mut order: Vec<(Key, Vec<&AgentRecord>)> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for a in &r.agents {
        let (level, name) = match (&a.tier, a.step.as_str().strip_prefix("synth/")) {
            (Tier::Synthesizer, Some(rest)) => {
                let level = rest.split('/').next().and_then(|l| l.parse().ok()).unwrap_or(1);
                (level, format!("synthesizer L{level}"))
            }
            (tier, _) => (0, tier.to_string()),
        };
        let key = (a.tier.rank(), level, md::clean(&name));
        let i = *index.entry(key.clone()).or_insert_with(|| {
            order.push((key, Vec::new()));
            order.len() - 1
        });
        order[i].1.push(a);
    }
    order.sort_by_key(|(key, _)| (key.0, key.1));
    order
        .into_iter()
        .map(|((rank, level, name), agents)| Group {
            color: match rank {
                3 => 2 + (level.saturating_sub(1) as usize % 3),
                4 => 5,
                0 => 0,
                1 => 1,
                _ => 6,
            },
            name,
            agents,
        })
        .collect()
}

/// The steps of tool loops that are not an agent's answer: every tool call
/// (`…/round/01/tool/1`) and every round but the last (`…/round/01` when `…/round/02`
/// exists).
fn loop_internals(r: &RunResult) -> std::collections::HashSet<&str> {
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut internal = std::collections::HashSet::new();
    for a in &r.agents {
        let step = a.step.as_str();
        if step.contains("/tool/") {
            internal.insert(step);
        } else if let Some((agent, round)) = step.rsplit_once("/round/") {
            let kept = last.entry(agent).or_insert(round);
            if round > *kept {
                *kept = round;
            }
        }
    }
    for a in &r.agents {
        let step = a.step.as_str();
        if let Some((agent, round)) = step.rsplit_once("/round/")
            && !step.contains("/tool/")
            && last.get(agent).is_some_and(|l| *l != round)
        {
            internal.insert(step);
        }
    }
    internal
}

fn sources(m: &Model<'_>) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut add = |blocks: &[Block], by: &str| {
        let mut links = Vec::new();
        md::links(blocks, &mut links);
        for (url, text) in links {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                continue;
            }
            let key = url.trim_end_matches('/').to_string();
            let i = *index.entry(key).or_insert_with(|| {
                out.push(Source { url: url.clone(), title: None, cited_by: Vec::new() });
                out.len() - 1
            });
            let s = &mut out[i];
            let text = one_line(&text);
            if s.title.is_none() && !text.is_empty() && text != url && !text.starts_with("http") {
                s.title = Some(text);
            }
            if !s.cited_by.iter().any(|c| c == by) {
                s.cited_by.push(by.to_string());
            }
        }
    };
    if let Some(b) = &m.final_blocks {
        add(b, "final synthesis");
    }
    for s in m.sections() {
        if let Some(b) = s.blocks() {
            add(&b, s.agent.step.as_str());
        }
    }
    // What the run's tools read (pages fetched, search results), cited or not.
    for read in &m.r.sources {
        let key = read.url.trim_end_matches('/').to_string();
        let i = *index.entry(key).or_insert_with(|| {
            out.push(Source { url: read.url.clone(), title: None, cited_by: Vec::new() });
            out.len() - 1
        });
        let s = &mut out[i];
        if s.title.is_none() && !read.title.is_empty() {
            s.title = Some(one_line(&read.title));
        }
        if !s.cited_by.iter().any(|c| c == "tools") {
            s.cited_by.push("tools".to_string());
        }
    }
    out
}

/// "worker/001, worker/002 and 3 more".
pub fn cited_by(s: &Source) -> String {
    let shown: Vec<&str> = s.cited_by.iter().take(4).map(String::as_str).collect();
    let more = s.cited_by.len().saturating_sub(shown.len());
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

/// The sentence that says what a size-limited report left out.
pub fn omitted_note(n: usize, what: &str, format: &str) -> String {
    format!(
        "{n} more {what} {} left out of this {format} to keep it to a printable size; the Markdown and HTML \
         reports have all of them.",
        if n == 1 { "is" } else { "are" }
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of `n` workers whose outputs are 100 bytes each.
    pub fn run(n: usize) -> RunResult {
        let agent = |step: String, tier: Tier| AgentRecord {
            step: step.as_str().into(),
            tier,
            status: AgentStatus::Completed,
            inputs: vec![],
            output: Some("x".repeat(100).into()),
            error: None,
            outcome: belt_core::StepOutcome {
                model: "m/x".into(),
                usage: belt_core::Usage::new(1, 1),
                attempts: 1,
                duration_ms: 1,
                ..Default::default()
            },
            started_ms: 0,
            metadata: None,
        };
        let mut agents: Vec<AgentRecord> =
            (1..=n).map(|i| agent(format!("worker/{i:03}"), Tier::Worker)).collect();
        agents.push(agent("synth/1/001".into(), Tier::Synthesizer));
        RunResult {
            run_id: "r".into(),
            status: belt_core::RunStatus::Completed,
            stop_reason: String::new(),
            pattern: "cascade".into(),
            task: "t".into(),
            plan: (1..=n)
                .map(|i| {
                    serde_json::from_value(serde_json::json!({"id": i.to_string(), "description": "d"}))
                        .unwrap()
                })
                .collect(),
            agents,
            final_output: Some("final".into()),
            usage: Default::default(),
            cost_usd: 0.0,
            duration_ms: 0,
            documents: vec![],
            simulated: false,
            shape: vec![],
            started_at: None,
            segments: Vec::new(),
            caps: Vec::new(),
            sources: Vec::new(),
            degradations: Vec::new(),
            agent_totals: Vec::new(),
        }
    }

    #[test]
    fn every_format_has_the_per_agent_table_from_one_computation() {
        let mut r = run(4);
        r.agents[1].status = AgentStatus::Failed;
        r.agents[1].outcome.attempts = 3;
        let rows = agent_rows(&r);
        assert_eq!(
            rows,
            [
                ["worker", "4", "75%", "6", "4", "4", "$0.0000", seconds(4).as_str()].map(String::from),
                ["synthesizer", "1", "100%", "1", "1", "1", "$0.0000", seconds(1).as_str()].map(String::from),
            ]
        );
        // Recorded totals (a result of this version) are what is shown.
        r.agent_totals = belt_core::agent_totals(&r.agents);
        r.agent_totals[0].calls = 99;
        assert_eq!(agent_rows(&r)[0][3], "99");
        let md = crate::markdown(&r);
        assert!(md.contains("### Per agent\n\n| Agent | Steps | Success | Calls |"), "{md}");
        assert!(md.contains("| worker | 4 | 75% | 99 | 4 | 4 | $0.0000 | 0.0 s |"), "{md}");
        let mut html = Vec::new();
        crate::render(&r, crate::Format::Html, &mut html).unwrap();
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("<h3>Per agent</h3>") && html.contains("<td class=\"num\">75%</td>"), "{html}");
    }

    #[test]
    fn limits_keep_sections_in_order_while_they_fit() {
        let r = run(10);
        let mut m = Model::new(&r);
        m.limit(Limits { text_bytes: 450, sections: 100, rows: 3 });
        // The synthesis (100 bytes) comes first, then three workers fit in 450.
        assert_eq!((m.syntheses.len(), m.workers.len()), (1, 3));
        assert_eq!(m.omitted, Omitted { workers: 7, plan: 7, ..Omitted::default() });
        assert_eq!(m.plan_rows, 3);
        let mut m = Model::new(&r);
        m.limit(Limits { text_bytes: usize::MAX, sections: 2, rows: 100 });
        assert_eq!((m.syntheses.len(), m.workers.len(), m.omitted.workers), (1, 1, 9));
        assert!(
            omitted_note(9, "workers' findings", "PDF").starts_with("9 more workers' findings are left out")
        );
    }
}

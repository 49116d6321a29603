//! belt-report: turns a finished run ([`RunResult`]) into a document a person reads.
//!
//! The report puts the final synthesis first, then the synthesis tiers, then each
//! worker's findings under its subtask, a section on failures and retries, and the plan
//! as an appendix. Text written by models is embedded as data: its headings are demoted
//! so they nest under the report's own structure.
//!
//! ```
//! use belt_core::{RunResult, RunStatus, UsageTotals};
//! let result = RunResult {
//!     run_id: "0193".into(), status: RunStatus::Completed, stop_reason: "all steps completed".into(),
//!     pattern: "cascade".into(), task: "Impact of AI on healthcare".into(), plan: vec![],
//!     agents: vec![], final_output: Some("## Summary\nAI helps.".into()),
//!     usage: UsageTotals::default(), cost_usd: 0.0, duration_ms: 1200, documents: vec![],
//!     simulated: true, shape: vec![], started_at: None,
//! };
//! let md = belt_report::markdown(&result);
//! assert!(md.starts_with("# Impact of AI on healthcare"));
//! assert!(md.contains("#### Summary"));
//! assert_eq!(belt_report::file_name(&result, "md"), "impact-of-ai-on-healthcare-0193.md");
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use belt_core::{AgentRecord, AgentStatus, RunResult, Tier};

/// The report as Markdown.
pub fn markdown(r: &RunResult) -> String {
    let mut md = String::with_capacity(
        4096 + r.agents.iter().map(|a| a.output.as_ref().map_or(0, |o| o.len())).sum::<usize>(),
    );
    let _ = writeln!(md, "# {}\n", title(r));
    if r.simulated {
        md.push_str(
            "> **Simulated run.** The texts below were written by belt's offline simulated provider, \
             not by a language model. Set a model (`--model provider/name`) for real output.\n\n",
        );
    }
    metadata(&mut md, r);

    md.push_str("## Final synthesis\n\n");
    match &r.final_output {
        Some(text) => {
            md.push_str(&demote(text, 2));
            md.push_str("\n\n");
        }
        None => {
            let _ = writeln!(md, "_No final output: {}_\n", r.stop_reason);
        }
    }

    let synth: Vec<&AgentRecord> =
        r.agents.iter().filter(|a| matches!(a.tier, Tier::Synthesizer | Tier::Executive)).collect();
    let intermediate: Vec<&&AgentRecord> = synth.iter().filter(|a| a.tier == Tier::Synthesizer).collect();
    if !intermediate.is_empty() {
        md.push_str("## Syntheses\n\n");
        for a in intermediate {
            let _ = writeln!(md, "### {}\n", a.step);
            agent_line(&mut md, a);
            body(&mut md, a);
        }
    }

    let workers: Vec<&AgentRecord> = r.agents.iter().filter(|a| a.tier == Tier::Worker).collect();
    if !workers.is_empty() {
        md.push_str("## Worker findings\n\n");
        for (i, a) in workers.iter().enumerate() {
            let description = r.plan.get(i).map_or("", |s| s.description.as_str());
            let _ = writeln!(md, "### {}. {}\n", i + 1, one_line(description));
            agent_line(&mut md, a);
            body(&mut md, a);
        }
    }

    failures(&mut md, r);
    plan_appendix(&mut md, r);
    md.truncate(md.trim_end().len());
    md.push('\n');
    md
}

/// `slug-of-the-task-RUNID.ext`: safe in any directory, never derived from raw text.
pub fn file_name(r: &RunResult, ext: &str) -> String {
    let mut slug = String::new();
    for c in r.task.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 60 {
            break;
        }
    }
    let slug = slug.trim_matches('-');
    let id: String = r.run_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let slug = if slug.is_empty() { "belt-run" } else { slug };
    format!("{slug}-{id}.{ext}")
}

fn title(r: &RunResult) -> String {
    let t = one_line(&r.task);
    if t.chars().count() > 100 { format!("{}…", t.chars().take(100).collect::<String>()) } else { t }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn metadata(md: &mut String, r: &RunResult) {
    let mut models: BTreeMap<(u8, String), Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<(u8, String), usize> = BTreeMap::new();
    for a in &r.agents {
        let key = (a.tier.rank(), a.tier.to_string());
        *counts.entry(key.clone()).or_default() += 1;
        let m = models.entry(key).or_default();
        if !a.model.is_empty() && !m.iter().any(|x| **x == *a.model) {
            m.push(a.model.to_string());
        }
    }
    let models = models
        .iter()
        .map(|((_, tier), m)| format!("{tier}: {}", if m.is_empty() { "—".into() } else { m.join(", ") }))
        .collect::<Vec<_>>()
        .join("; ");
    let agents = counts.iter().map(|((_, t), n)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
    md.push_str("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
    };
    row("Run", format!("`{}`", r.run_id));
    if let Some(t) = r.started_at {
        row("Date", t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    }
    row("Pattern", r.pattern.clone());
    row("Models", models);
    row("Agents", agents);
    row("Status", format!("{} ({})", r.status, r.stop_reason));
    row("Duration", format!("{:.1} s", r.duration_ms as f64 / 1000.0));
    row(
        "Tokens",
        format!("{} in, {} out, {} calls", r.usage.input_tokens, r.usage.output_tokens, r.usage.calls),
    );
    row("Cost", format!("${:.4}{}", r.cost_usd, if r.simulated { " (nominal, simulated)" } else { "" }));
    md.push('\n');
}

fn agent_line(md: &mut String, a: &AgentRecord) {
    let _ =
        write!(md, "_{} · {} · {}", a.step, a.status_str(), if a.model.is_empty() { "—" } else { &a.model });
    if a.status == AgentStatus::Completed {
        let _ = write!(
            md,
            " · {} + {} tokens · ${:.4} · {:.1} s",
            a.input_tokens,
            a.output_tokens,
            a.cost_usd,
            a.duration_ms as f64 / 1000.0
        );
    }
    if a.attempts > 1 {
        let _ = write!(md, " · {} attempts", a.attempts);
    }
    if !a.inputs.is_empty() {
        let first = &a.inputs[0];
        let last = &a.inputs[a.inputs.len() - 1];
        if a.inputs.len() == 1 {
            let _ = write!(md, " · input {first}");
        } else {
            let _ = write!(md, " · inputs {first} … {last} ({})", a.inputs.len());
        }
    }
    md.push_str("_\n\n");
}

fn body(md: &mut String, a: &AgentRecord) {
    match (&a.output, &a.error) {
        (Some(o), _) => {
            md.push_str(&demote(o, 3));
            md.push_str("\n\n");
        }
        (None, Some(e)) => {
            let _ = writeln!(md, "_No output: {}_\n", one_line(e));
        }
        (None, None) => md.push_str("_No output._\n\n"),
    }
}

fn failures(md: &mut String, r: &RunResult) {
    let rows: Vec<&AgentRecord> =
        r.agents.iter().filter(|a| a.status != AgentStatus::Completed || a.attempts > 1).collect();
    md.push_str("## Failures and retries\n\n");
    if rows.is_empty() {
        md.push_str("Every step succeeded at its first attempt.\n\n");
        return;
    }
    md.push_str("| Step | Tier | Status | Attempts | Error |\n|---|---|---|---|---|\n");
    for a in rows {
        let err = a.error.as_deref().map(one_line).unwrap_or_default().replace('|', "\\|");
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", a.step, a.tier, a.status_str(), a.attempts, err);
    }
    md.push('\n');
}

fn plan_appendix(md: &mut String, r: &RunResult) {
    if r.plan.is_empty() {
        return;
    }
    md.push_str("## Appendix: plan\n\n| # | Id | Subtask | Specialization | Priority | Depends on |\n|---|---|---|---|---|---|\n");
    for (i, s) in r.plan.iter().enumerate() {
        let cell = |t: &str| one_line(t).replace('|', "\\|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            cell(&s.id),
            cell(&s.description),
            cell(&s.specialization),
            s.priority,
            cell(&s.dependencies.join(", "))
        );
    }
}

/// Push every ATX heading of `text` down by `by` levels (at most `######`), outside code
/// fences, so embedded model output nests under the report's headings.
pub fn demote(text: &str, by: usize) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut fence = false;
    for line in text.trim().lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
        }
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if !fence && (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
            let level = (hashes + by).min(6);
            out.push_str(&"#".repeat(level));
            out.push_str(&t[hashes..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

trait StatusStr {
    fn status_str(&self) -> &'static str;
}

impl StatusStr for AgentRecord {
    fn status_str(&self) -> &'static str {
        match self.status {
            AgentStatus::Completed => "completed",
            AgentStatus::Failed => "failed",
            AgentStatus::Skipped => "skipped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demote_skips_code_fences_and_caps_at_six() {
        let text = "# A\ntext\n```\n# not a heading\n```\n##### deep\n#nospace";
        assert_eq!(demote(text, 2), "### A\ntext\n```\n# not a heading\n```\n###### deep\n#nospace");
    }

    #[test]
    fn file_names_are_slugs_that_cannot_escape() {
        let mut r: RunResult = serde_json_like();
        r.task = "../../etc/passwd <script>".into();
        r.run_id = "ab/../cd".into();
        let name = file_name(&r, "md");
        assert_eq!(name, "etc-passwd-script-abcd.md");
        assert!(!name.contains('/'));
    }

    fn serde_json_like() -> RunResult {
        RunResult {
            run_id: "x".into(),
            status: belt_core::RunStatus::Completed,
            stop_reason: String::new(),
            pattern: "cascade".into(),
            task: "t".into(),
            plan: vec![],
            agents: vec![],
            final_output: None,
            usage: Default::default(),
            cost_usd: 0.0,
            duration_ms: 0,
            documents: vec![],
            simulated: false,
            shape: vec![],
            started_at: None,
        }
    }
}

//! The Markdown report. Model text is Markdown already, so it is embedded as written, its
//! headings demoted under the report's own.

use std::fmt::Write as _;

use crate::md::clean;
use crate::model::{Model, Section, cited_by, one_line, seconds};

pub fn render(m: &Model<'_>) -> String {
    let r = m.r;
    let mut md = String::with_capacity(
        4096 + r.agents.iter().map(|a| a.output.as_ref().map_or(0, |o| o.len())).sum::<usize>(),
    );
    let _ = writeln!(md, "# {}\n", escape(&m.title));
    if r.simulated {
        md.push_str(
            "> **Simulated run.** The texts below were written by belt's offline simulated provider, \
             not by a language model. Set a model (`--model provider/name`) for real output.\n\n",
        );
    }
    md.push_str("| | |\n|---|---|\n");
    for (k, v) in &m.meta {
        let v = if *k == "Run" { format!("`{v}`") } else { cell(v) };
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');

    md.push_str("## Final synthesis\n\n");
    match &r.final_output {
        Some(text) => {
            md.push_str(&crate::demote(&clean(text), 2));
            md.push_str("\n\n");
        }
        None => {
            let _ = writeln!(md, "_No final output: {}_\n", escape(&r.stop_reason));
        }
    }
    sections(&mut md, "Syntheses", &m.syntheses);
    sections(&mut md, "Worker findings", &m.workers);
    sections(&mut md, "Other steps", &m.others);

    if !m.groups.is_empty() {
        md.push_str("## Time and cost\n\n");
        md.push_str(
            "| Tier | Steps | Done | Failed | Skipped | Tokens in | Tokens out | Cost | Time | Longest step |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for g in &m.groups {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&g.name),
                g.agents.len(),
                g.count(belt_core::AgentStatus::Completed),
                g.count(belt_core::AgentStatus::Failed),
                g.count(belt_core::AgentStatus::Skipped),
                g.input_tokens(),
                g.output_tokens(),
                g.cost(),
                seconds(g.wall_ms()),
                seconds(g.longest_ms()),
            );
        }
        md.push('\n');
    }
    if !m.agent_rows.is_empty() {
        md.push_str("### Per agent\n\n");
        let _ = writeln!(md, "| {} |", crate::model::AGENT_HEAD.join(" | "));
        md.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
        for row in &m.agent_rows {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        md.push('\n');
    }

    md.push_str("## Failures and retries\n\n");
    if m.failures.is_empty() {
        md.push_str("Every step succeeded at its first attempt.\n\n");
    } else {
        md.push_str("| Step | Tier | Status | Attempts | Error |\n|---|---|---|---|---|\n");
        for a in &m.failures {
            let err = cell(&crate::model::problem(a));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                cell(a.step.as_str()),
                cell(a.tier.as_str()),
                crate::model::status_str(a),
                a.outcome.attempts,
                err
            );
        }
        md.push('\n');
    }

    if !m.sources.is_empty() {
        md.push_str("## Sources\n\n");
        for (i, s) in m.sources.iter().enumerate() {
            let url = s.url.replace('<', "%3C").replace('>', "%3E").replace(' ', "%20");
            match &s.title {
                Some(t) => {
                    let _ = writeln!(md, "{}. {} — <{url}> ({})", i + 1, escape(t), escape(&cited_by(s)));
                }
                None => {
                    let _ = writeln!(md, "{}. <{url}> ({})", i + 1, escape(&cited_by(s)));
                }
            }
        }
        md.push('\n');
    }

    if !r.plan.is_empty() {
        md.push_str(
            "## Appendix: plan\n\n| # | Id | Subtask | Specialization | Priority | Depends on |\n\
             |---|---|---|---|---|---|\n",
        );
        for (i, s) in r.plan.iter().enumerate() {
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
    md.truncate(md.trim_end().len());
    md.push('\n');
    md
}

fn sections(md: &mut String, title: &str, sections: &[Section<'_>]) {
    if sections.is_empty() {
        return;
    }
    let _ = writeln!(md, "## {title}\n");
    for s in sections {
        let _ = writeln!(md, "### {}\n", escape(&s.heading));
        let _ = writeln!(md, "_{}_\n", escape(&s.facts.join(" · ")));
        match s.text() {
            Some(o) => {
                md.push_str(&crate::demote(&clean(&o), 3));
                md.push_str("\n\n");
            }
            None => {
                let _ = writeln!(md, "_{}_\n", escape(&s.note));
            }
        }
    }
}

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(&one_line(s)).chars() {
        if "|<>".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Plain text that Markdown shows as written.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean(&one_line(s)).chars() {
        if "\\`*_[]<>#|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

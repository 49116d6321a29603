//! The HTML report: one self-contained file (inline CSS and SVG), no scripts, nothing
//! fetched. A Content-Security-Policy that forbids scripts and every external load backs
//! the escaping up. The markup is also well-formed XML (void elements closed, no named
//! entities), which is how the tests parse it.

use std::fmt::Write as _;

use belt_core::{AgentRecord, AgentStatus, RunStatus};

use crate::md::{Align, Block, Inline};
use crate::model::{Model, Section, cited_by, seconds, status_str};

const CSS: &str = include_str!("report.css");

pub fn render(m: &Model<'_>) -> String {
    let r = m.r;
    let mut h = String::with_capacity(
        16_384 + r.agents.iter().map(|a| a.output.as_ref().map_or(0, |o| o.len() * 5 / 4)).sum::<usize>(),
    );
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n");
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\" />\n",
    );
    h.push_str("<meta name=\"generator\" content=\"belt\" />\n");
    let _ = writeln!(h, "<title>{}</title>", escape(&m.title));
    let _ = writeln!(h, "<style>\n{CSS}</style>\n</head>\n<body>\n<main>");

    // Cover: title, one line of context, the notice, the metadata.
    h.push_str("<header class=\"cover\">\n<p class=\"kicker\">belt · run report</p>\n");
    let _ = writeln!(h, "<h1>{}</h1>", escape(&m.title));
    let date = r.started_at.map(|t| t.format("%-d %B %Y, %H:%M UTC").to_string());
    let _ = writeln!(
        h,
        "<p class=\"sub\">{} {}{}</p>\n</header>",
        badge(r.status),
        escape(&r.pattern),
        date.map(|d| format!(" · {}", escape(&d))).unwrap_or_default()
    );
    if r.simulated {
        h.push_str(
            "<aside class=\"notice\"><strong>Simulated run.</strong> The texts below were written by \
             belt's offline simulated provider, not by a language model. Set a model \
             (<code>--model provider/name</code>) for real output.</aside>\n",
        );
    }
    h.push_str("<table class=\"meta\">\n<tbody>\n");
    for (k, v) in &m.meta {
        let value = if *k == "Run" { format!("<code>{}</code>", escape(v)) } else { escape(v) };
        let _ = writeln!(h, "<tr><th scope=\"row\">{k}</th><td>{value}</td></tr>");
    }
    h.push_str("</tbody>\n</table>\n");

    // Contents.
    let mut toc = vec![("final", "Final synthesis")];
    if !m.syntheses.is_empty() {
        toc.push(("syntheses", "Syntheses"));
    }
    if !m.workers.is_empty() {
        toc.push(("workers", "Worker findings"));
    }
    if !m.others.is_empty() {
        toc.push(("others", "Other steps"));
    }
    if !m.groups.is_empty() {
        toc.push(("time-and-cost", "Time and cost"));
    }
    toc.push(("failures", "Failures and retries"));
    if !m.sources.is_empty() {
        toc.push(("sources", "Sources"));
    }
    if !r.plan.is_empty() {
        toc.push(("plan", "Appendix: plan"));
    }
    h.push_str("<nav class=\"toc\" aria-label=\"Contents\">\n<p class=\"toc-title\">Contents</p>\n<ol>\n");
    for (id, title) in &toc {
        let _ = writeln!(h, "<li><a href=\"#{id}\">{title}</a></li>");
    }
    h.push_str("</ol>\n</nav>\n");

    h.push_str("<section id=\"final\">\n<h2>Final synthesis</h2>\n");
    match &m.final_blocks {
        Some(blocks) => blocks_html(&mut h, blocks),
        None => {
            let _ = writeln!(h, "<p class=\"empty\">No final output: {}</p>", escape(&r.stop_reason));
        }
    }
    h.push_str("</section>\n");
    sections(&mut h, "syntheses", "Syntheses", &m.syntheses);
    sections(&mut h, "workers", "Worker findings", &m.workers);
    sections(&mut h, "others", "Other steps", &m.others);

    if !m.groups.is_empty() {
        h.push_str("<section id=\"time-and-cost\">\n<h2>Time and cost</h2>\n<figure>\n");
        h.push_str(&crate::chart::svg(&m.groups, crate::chart::SANS));
        h.push_str(
            "\n<figcaption>Duration and cost of each agent, grouped by tier; failed steps in red.</figcaption>\n\
             </figure>\n",
        );
        h.push_str(
            "<div class=\"table-wrap\"><table class=\"tiers\">\n<thead><tr><th>Tier</th><th class=\"num\">Steps</th>\
             <th class=\"num\">Done</th><th class=\"num\">Failed</th><th class=\"num\">Skipped</th>\
             <th class=\"num\">Tokens in</th><th class=\"num\">Tokens out</th><th class=\"num\">Cost</th>\
             <th class=\"num\">Time</th><th class=\"num\">Longest step</th></tr></thead>\n<tbody>\n",
        );
        for g in &m.groups {
            let _ = writeln!(
                h,
                "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                crate::chart::PALETTE[g.color % crate::chart::PALETTE.len()],
                escape(&g.name),
                g.agents.len(),
                g.count(AgentStatus::Completed),
                g.count(AgentStatus::Failed),
                g.count(AgentStatus::Skipped),
                g.input_tokens(),
                g.output_tokens(),
                g.cost(),
                seconds(g.wall_ms()),
                seconds(g.longest_ms()),
            );
        }
        h.push_str("</tbody>\n</table></div>\n");
        agent_table(&mut h, m);
        h.push_str("</section>\n");
    }

    h.push_str("<section id=\"failures\">\n<h2>Failures and retries</h2>\n");
    if m.failures.is_empty() {
        h.push_str("<p>Every step succeeded at its first attempt.</p>\n");
    } else {
        h.push_str(
            "<div class=\"table-wrap\"><table>\n<thead><tr><th>Step</th><th>Tier</th><th>Status</th>\
             <th class=\"num\">Attempts</th><th>Error</th></tr></thead>\n<tbody>\n",
        );
        for a in &m.failures {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(a.step.as_str()),
                escape(a.tier.as_str()),
                agent_badge(a),
                a.outcome.attempts,
                escape(&crate::model::problem(a))
            );
        }
        h.push_str("</tbody>\n</table></div>\n");
    }
    h.push_str("</section>\n");

    if !m.sources.is_empty() {
        h.push_str("<section id=\"sources\">\n<h2>Sources</h2>\n<ol class=\"sources\">\n");
        for s in &m.sources {
            let text = s.title.as_deref().unwrap_or(&s.url);
            let _ = write!(
                h,
                "<li><a href=\"{}\" rel=\"noopener noreferrer nofollow\">{}</a>",
                escape(&s.url),
                escape(text)
            );
            if s.title.is_some() {
                let _ = write!(h, " <span class=\"url\">{}</span>", escape(&s.url));
            }
            let _ = writeln!(h, " <span class=\"cited\">cited by {}</span></li>", escape(&cited_by(s)));
        }
        h.push_str("</ol>\n</section>\n");
    }

    if !r.plan.is_empty() {
        h.push_str(
            "<section id=\"plan\">\n<h2>Appendix: plan</h2>\n<div class=\"table-wrap\"><table>\n<thead><tr>\
             <th class=\"num\">#</th><th>Id</th><th>Subtask</th><th>Specialization</th><th class=\"num\">Priority</th>\
             <th>Depends on</th></tr></thead>\n<tbody>\n",
        );
        for (i, s) in r.plan.iter().enumerate() {
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                i + 1,
                escape(&s.id),
                escape(&s.description),
                escape(&s.specialization),
                s.priority,
                escape(&s.dependencies.join(", "))
            );
        }
        h.push_str("</tbody>\n</table></div>\n</section>\n");
    }
    let _ = writeln!(
        h,
        "<footer>Written by belt from run <code>{}</code>.</footer>\n</main>\n</body>\n</html>",
        escape(&r.run_id)
    );
    h
}

fn sections(h: &mut String, id: &str, title: &str, sections: &[Section<'_>]) {
    if sections.is_empty() {
        return;
    }
    let _ = writeln!(h, "<section id=\"{id}\">\n<h2>{title}</h2>");
    for s in sections {
        let _ = writeln!(h, "<article id=\"{}\">", anchor(s.agent.step.as_str()));
        let _ = writeln!(h, "<h3>{}</h3>", escape(&s.heading));
        h.push_str("<p class=\"facts\">");
        for (i, f) in s.facts.iter().enumerate() {
            if i == 1 {
                let _ = write!(h, "<span>{}</span>", agent_badge(s.agent));
            } else {
                let _ = write!(h, "<span>{}</span>", escape(f));
            }
        }
        h.push_str("</p>\n");
        match s.blocks() {
            Some(blocks) => blocks_html(h, &blocks),
            None => {
                let _ = writeln!(h, "<p class=\"empty\">{}</p>", escape(&s.note));
            }
        }
        h.push_str("</article>\n");
    }
    h.push_str("</section>\n");
}

fn anchor(step: &str) -> String {
    let mut a = String::from("step-");
    a.extend(step.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }));
    a
}

fn badge(status: RunStatus) -> String {
    let class = match status {
        RunStatus::Completed => "ok",
        RunStatus::Partial | RunStatus::BudgetExhausted | RunStatus::Queued | RunStatus::Running => "warn",
        RunStatus::Failed | RunStatus::Interrupted => "bad",
        _ => "neutral",
    };
    format!("<span class=\"badge {class}\">{}</span>", status.as_str().replace('_', " "))
}

fn agent_badge(a: &AgentRecord) -> String {
    let class = match a.status {
        AgentStatus::Completed if a.outcome.attempts > 1 => "warn",
        AgentStatus::Completed => "ok",
        AgentStatus::Failed | AgentStatus::TimedOut => "bad",
        _ => "neutral",
    };
    format!("<span class=\"badge {class}\">{}</span>", status_str(a))
}

/// Text for HTML (and XML): `& < > " '` escaped, control characters dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    escape_into(&mut out, s);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

fn blocks_html(h: &mut String, blocks: &[Block]) {
    for b in blocks {
        block_html(h, b);
    }
}

fn block_html(h: &mut String, b: &Block) {
    match b {
        Block::Heading(level, content) => {
            let _ = write!(h, "<h{level}>");
            inlines_html(h, content);
            let _ = writeln!(h, "</h{level}>");
        }
        Block::Paragraph(content) => {
            h.push_str("<p>");
            inlines_html(h, content);
            h.push_str("</p>\n");
        }
        Block::List { start, items } => {
            match start {
                Some(1) => h.push_str("<ol>\n"),
                Some(n) => {
                    let _ = writeln!(h, "<ol start=\"{n}\">");
                }
                None => h.push_str("<ul>\n"),
            }
            for item in items {
                h.push_str("<li>");
                // A tight item's single paragraph needs no <p>.
                match item.as_slice() {
                    [Block::Paragraph(content)] => inlines_html(h, content),
                    [Block::Paragraph(content), rest @ ..] => {
                        inlines_html(h, content);
                        h.push('\n');
                        blocks_html(h, rest);
                    }
                    _ => blocks_html(h, item),
                }
                h.push_str("</li>\n");
            }
            h.push_str(if start.is_some() { "</ol>\n" } else { "</ul>\n" });
        }
        Block::Code { lang, text } => {
            if lang.is_empty() {
                h.push_str("<pre><code>");
            } else {
                let _ = write!(h, "<pre><code class=\"language-{}\">", escape(lang));
            }
            escape_into(h, text);
            h.push_str("</code></pre>\n");
        }
        Block::Quote(blocks) => {
            h.push_str("<blockquote>\n");
            blocks_html(h, blocks);
            h.push_str("</blockquote>\n");
        }
        Block::Table(t) => {
            let class = |a: Align| match a {
                Align::Right => " class=\"num\"",
                Align::Center => " class=\"center\"",
                Align::Left | Align::None => "",
            };
            h.push_str("<div class=\"table-wrap\"><table>\n<thead><tr>");
            for (i, c) in t.head.iter().enumerate() {
                let _ = write!(h, "<th{}>", class(t.align[i]));
                inlines_html(h, c);
                h.push_str("</th>");
            }
            h.push_str("</tr></thead>\n<tbody>\n");
            for row in &t.rows {
                h.push_str("<tr>");
                for (i, c) in row.iter().enumerate() {
                    let _ = write!(h, "<td{}>", class(t.align[i]));
                    inlines_html(h, c);
                    h.push_str("</td>");
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</tbody>\n</table></div>\n");
        }
        Block::Rule => h.push_str("<hr />\n"),
    }
}

fn inlines_html(h: &mut String, inlines: &[Inline]) {
    for i in inlines {
        match i {
            Inline::Text(t) => escape_into(h, t),
            Inline::Code(t) => {
                h.push_str("<code>");
                escape_into(h, t);
                h.push_str("</code>");
            }
            Inline::Emph(c) => wrap(h, "em", c),
            Inline::Strong(c) => wrap(h, "strong", c),
            Inline::Strike(c) => wrap(h, "del", c),
            Inline::Link { url: Some(url), content } => {
                let _ = write!(h, "<a href=\"{}\" rel=\"noopener noreferrer nofollow\">", escape(url));
                inlines_html(h, content);
                h.push_str("</a>");
            }
            Inline::Link { url: None, content } => inlines_html(h, content),
            Inline::LineBreak => h.push_str("<br />\n"),
            Inline::SoftBreak => h.push('\n'),
        }
    }
}

fn wrap(h: &mut String, tag: &str, content: &[Inline]) {
    let _ = write!(h, "<{tag}>");
    inlines_html(h, content);
    let _ = write!(h, "</{tag}>");
}

/// The per-agent table ([`crate::model::agent_rows`]).
fn agent_table(h: &mut String, m: &Model) {
    if m.agent_rows.is_empty() {
        return;
    }
    h.push_str("<h3>Per agent</h3>\n<div class=\"table-wrap\"><table class=\"tiers\">\n<thead><tr>");
    for (i, head) in crate::model::AGENT_HEAD.iter().enumerate() {
        let class = if i == 0 { "" } else { " class=\"num\"" };
        let _ = write!(h, "<th{class}>{}</th>", escape(head));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &m.agent_rows {
        h.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"num\"" };
            let _ = write!(h, "<td{class}>{}</td>", escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

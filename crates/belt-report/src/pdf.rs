//! The PDF report: the model is written as typst source and compiled in-process with the
//! fonts of typst-assets (Libertinus Serif, DejaVu Sans Mono), so it needs no network and
//! no installed fonts.
//!
//! Text from models never becomes typst markup: every piece of it is a typst *string
//! literal* (`#"…"`, escaping only `\` and `"`), and its structure (headings, lists,
//! tables, code, quotes, links) is written as calls of typst functions by this module. A
//! `#`, `]`, `$` or `*/` in model text is therefore just a character. The world the
//! compiler sees holds only the source and the chart: no file, package or font can be
//! loaded from anywhere else.

use std::fmt::Write as _;
use std::sync::LazyLock;

use belt_core::AgentStatus;
use chrono::{Datelike, Timelike};
use typst::diag::{FileError, FileResult, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime, Duration, Smart};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};
use typst_layout::PagedDocument;

use crate::md::{Align, Block, Inline};
use crate::model::{Limits, Model, Section, cited_by, omitted_note, one_line, seconds, status_str};
use crate::{Format, ReportError};

const PREAMBLE: &str = include_str!("report.typ");

/// About 1,100 pages and 1.2 GiB at most: a run of 1000 workers fits whole.
pub const LIMITS: Limits = Limits { text_bytes: 4 << 20, sections: 1500, rows: 1000 };

pub fn render(m: &Model<'_>) -> Result<Vec<u8>, ReportError> {
    let source = source(m);
    let chart = crate::chart::svg(&m.groups, crate::chart::EMBEDDED);
    let world = ReportWorld::new(source, chart.into_bytes());
    let fail = |message: String| ReportError::Render { format: Format::Pdf, message };
    let document: PagedDocument = typst::compile(&world).output.map_err(|e| fail(diagnostics(&world, &e)))?;
    let mut options = typst_pdf::PdfOptions {
        ident: Smart::Custom(format!("belt-{}", m.r.run_id)),
        creator: Smart::Custom(Some("belt".to_string())),
        ..Default::default()
    };
    if let Some(t) = m.r.started_at.and_then(datetime) {
        options.timestamp = Some(typst_pdf::Timestamp::new_utc(t));
    }
    let pdf = typst_pdf::pdf(&document, &options).map_err(|e| fail(diagnostics(&world, &e)))?;
    drop(document);
    // The compiler memoizes into process-wide caches; a report shares nothing with the next.
    typst::comemo::evict(0);
    Ok(pdf)
}

fn datetime(t: chrono::DateTime<chrono::Utc>) -> Option<Datetime> {
    Datetime::from_ymd_hms(
        t.year(),
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
}

fn diagnostics(world: &ReportWorld, errors: &[SourceDiagnostic]) -> String {
    use typst::WorldExt;
    errors
        .iter()
        .take(3)
        .map(|e| {
            let at = world
                .range(e.span)
                .map(|r| {
                    let text = world.main.text();
                    let start = text.floor_char_boundary(r.start.saturating_sub(40));
                    let end = text.ceil_char_boundary((r.end + 40).min(text.len()));
                    format!(" near `{}`", one_line(&text[start..end]))
                })
                .unwrap_or_default();
            format!("{}{at}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fonts, parsed once per process.
static FONTS: LazyLock<(LazyHash<FontBook>, Vec<Font>)> = LazyLock::new(|| {
    let fonts: Vec<Font> = typst_assets::fonts().flat_map(|data| Font::iter(Bytes::new(data))).collect();
    (LazyHash::new(FontBook::from_fonts(&fonts)), fonts)
});

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

fn file_id(path: &str) -> FileId {
    RootedPath::new(VirtualRoot::Project, VirtualPath::new(path).expect("a valid virtual path")).intern()
}

struct ReportWorld {
    main: Source,
    chart_id: FileId,
    chart: Bytes,
}

impl ReportWorld {
    fn new(source: String, chart: Vec<u8>) -> Self {
        ReportWorld {
            main: Source::new(file_id("/report.typ"), source),
            chart_id: file_id("/chart.svg"),
            chart: Bytes::new(chart),
        }
    }
}

impl World for ReportWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }
    fn book(&self) -> &LazyHash<FontBook> {
        &FONTS.0
    }
    fn main(&self) -> FileId {
        self.main.id()
    }
    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.main.id() { Ok(self.main.clone()) } else { Err(FileError::AccessDenied) }
    }
    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == self.chart_id { Ok(self.chart.clone()) } else { Err(FileError::AccessDenied) }
    }
    fn font(&self, index: usize) -> Option<Font> {
        FONTS.1.get(index).cloned()
    }
    fn today(&self, _offset: Option<Duration>) -> Option<Datetime> {
        None
    }
}

/// The typst source of the report.
pub fn source(m: &Model<'_>) -> String {
    let r = m.r;
    let mut t = String::with_capacity(
        16_384 + r.agents.iter().map(|a| a.output.as_ref().map_or(0, |o| o.len() * 3 / 2)).sum::<usize>(),
    );
    t.push_str("#let report-title = ");
    lit(&mut t, &m.title);
    t.push_str("\n#let report-short = ");
    let short: String = m.title.chars().take(70).collect();
    lit(&mut t, &if short.len() < m.title.len() { format!("{short}…") } else { short });
    t.push_str("\n#let report-run = ");
    lit(&mut t, &r.run_id);
    t.push_str("\n#let report-date = ");
    match r.started_at.and_then(datetime) {
        Some(d) => {
            let _ = write!(
                t,
                "datetime(year: {}, month: {}, day: {}, hour: {}, minute: {}, second: {})",
                d.year().unwrap_or(1970),
                d.month().unwrap_or(1),
                d.day().unwrap_or(1),
                d.hour().unwrap_or(0),
                d.minute().unwrap_or(0),
                d.second().unwrap_or(0)
            );
        }
        None => t.push_str("none"),
    }
    t.push('\n');
    t.push_str(PREAMBLE);
    t.push('\n');

    // Cover.
    let date = r.started_at.map(|d| d.format("%-d %B %Y, %H:%M UTC").to_string());
    t.push_str("#cover(");
    lit(
        &mut t,
        &format!(
            "{} · {}{}",
            r.status.as_str().replace('_', " "),
            r.pattern,
            date.map(|d| format!(" · {d}")).unwrap_or_default()
        ),
    );
    let _ = writeln!(t, ", {})", status_color(r.status));
    if r.simulated {
        t.push_str("#notice[#strong[Simulated run.] ");
        text(
            &mut t,
            "The texts below were written by belt's offline simulated provider, not by a language model. \
             Set a model (",
        );
        t.push_str("#raw(\"--model provider/name\")");
        text(&mut t, ") for real output.");
        t.push_str("]\n");
    }
    t.push_str("#meta-table(");
    for (k, v) in &m.meta {
        t.push('(');
        lit(&mut t, k);
        t.push_str(", ");
        lit(&mut t, v);
        t.push_str("), ");
    }
    t.push_str(")\n#contents()\n\n");

    t.push_str("#heading(level: 2)[Final synthesis]\n\n");
    match &m.final_blocks {
        Some(blocks) => blocks_typ(&mut t, blocks),
        None => {
            t.push_str("#empty(");
            lit(&mut t, &format!("No final output: {}", one_line(&r.stop_reason)));
            t.push_str(")\n\n");
        }
    }
    sections(&mut t, "Syntheses", &m.syntheses, m.omitted.syntheses, "syntheses");
    sections(&mut t, "Worker findings", &m.workers, m.omitted.workers, "workers' findings");
    sections(&mut t, "Other steps", &m.others, m.omitted.others, "steps");

    if !m.groups.is_empty() {
        t.push_str("#heading(level: 2)[Time and cost]\n\n");
        t.push_str(
            "#figure(image(\"chart.svg\", width: 100%), caption: [Duration and cost of each agent, grouped by tier; \
             failed steps in red.])\n\n",
        );
        t.push_str(
            "#data-table((1fr, auto, auto, auto, auto, auto, auto, auto, auto, auto), (left, right, right, right, right, right, right, right, right, right), \
             ([Tier], [Steps], [Done], [Failed], [Skipped], [Tokens in], [Tokens out], [Cost], [Time], [Longest step]), (",
        );
        for g in &m.groups {
            let cells = [
                g.name.clone(),
                g.agents.len().to_string(),
                g.count(AgentStatus::Completed).to_string(),
                g.count(AgentStatus::Failed).to_string(),
                g.count(AgentStatus::Skipped).to_string(),
                g.input_tokens().to_string(),
                g.output_tokens().to_string(),
                g.cost().to_string(),
                seconds(g.wall_ms()),
                seconds(g.longest_ms()),
            ];
            row(&mut t, &cells);
        }
        t.push_str("))\n\n");
    }
    if !m.agent_rows.is_empty() {
        t.push_str("#heading(level: 3)[Per agent]\n\n");
        t.push_str(
            "#data-table((1fr, auto, auto, auto, auto, auto, auto, auto), (left, right, right, right, right, right, right, right), (",
        );
        for head in crate::model::AGENT_HEAD {
            let _ = write!(t, "[{head}], ");
        }
        t.push_str("), (");
        for cells in &m.agent_rows {
            row(&mut t, cells);
        }
        t.push_str("))\n\n");
    }

    t.push_str("#heading(level: 2)[Failures and retries]\n\n");
    if m.failures.is_empty() {
        t.push_str("Every step succeeded at its first attempt.\n\n");
    } else {
        t.push_str(
            "#data-table((auto, auto, auto, auto, 1fr), (left, left, left, right, left), \
             ([Step], [Tier], [Status], [Attempts], [Error]), (",
        );
        for a in &m.failures {
            let cells = [
                a.step.to_string(),
                a.tier.to_string(),
                status_str(a).to_string(),
                a.outcome.attempts.to_string(),
                crate::model::problem(a),
            ];
            row(&mut t, &cells);
        }
        t.push_str("))\n\n");
        note(&mut t, m.omitted.failures, "failed or retried steps");
    }

    if !m.sources.is_empty() {
        t.push_str("#heading(level: 2)[Sources]\n\n#enum(\n");
        for s in &m.sources {
            t.push_str("  [#link(");
            lit(&mut t, &s.url);
            t.push_str(")[");
            text(&mut t, s.title.as_deref().unwrap_or(&s.url));
            t.push(']');
            if s.title.is_some() {
                t.push_str(" #source-url(");
                lit(&mut t, &s.url);
                t.push(')');
            }
            t.push_str(" #cited(");
            lit(&mut t, &format!("cited by {}", cited_by(s)));
            t.push_str(")],\n");
        }
        t.push_str(")\n\n");
        note(&mut t, m.omitted.sources, "sources");
    }

    if !r.plan.is_empty() {
        t.push_str(
            "#heading(level: 2)[Appendix: plan]\n\n#data-table((auto, auto, 1fr, auto, auto, auto), \
             (right, left, left, left, right, left), ([\\#], [Id], [Subtask], [Specialization], [Priority], [Depends on]), (",
        );
        for (i, s) in r.plan.iter().take(m.plan_rows).enumerate() {
            let cells = [
                (i + 1).to_string(),
                s.id.clone(),
                one_line(&s.description),
                one_line(&s.specialization),
                s.priority.to_string(),
                s.dependencies.join(", "),
            ];
            row(&mut t, &cells);
        }
        t.push_str("))\n\n");
        note(&mut t, m.omitted.plan, "subtasks");
    }
    t
}

/// Say what a size-limited report left out.
fn note(t: &mut String, omitted: usize, what: &str) {
    if omitted > 0 {
        t.push_str("#empty(");
        lit(t, &omitted_note(omitted, what, "PDF"));
        t.push_str(")\n\n");
    }
}

fn status_color(s: belt_core::RunStatus) -> &'static str {
    use belt_core::RunStatus::*;
    match s {
        Completed => "ok-color",
        Partial | BudgetExhausted | Queued | Running => "warn-color",
        Failed | Interrupted => "bad-color",
        _ => "luma(110)",
    }
}

fn row(t: &mut String, cells: &[String]) {
    t.push('(');
    for c in cells {
        lit(t, c);
        t.push_str(", ");
    }
    t.push_str("), ");
}

fn sections(t: &mut String, title: &str, sections: &[Section<'_>], omitted: usize, what: &str) {
    if sections.is_empty() && omitted == 0 {
        return;
    }
    let _ = writeln!(t, "#heading(level: 2)[{title}]\n");
    for s in sections {
        t.push_str("#heading(level: 3)[");
        text(t, &s.heading);
        t.push_str("]\n#facts(");
        for (i, f) in s.facts.iter().enumerate() {
            if i == 1 {
                let color = match s.agent.status {
                    AgentStatus::Completed if s.agent.outcome.attempts > 1 => "warn-color",
                    AgentStatus::Completed => "ok-color",
                    AgentStatus::Failed | AgentStatus::TimedOut => "bad-color",
                    _ => "luma(110)",
                };
                let _ = write!(t, "text(fill: {color}, weight: \"semibold\", ");
                lit(t, f);
                t.push_str("), ");
            } else {
                lit(t, f);
                t.push_str(", ");
            }
        }
        t.push_str(")\n\n");
        match s.blocks() {
            Some(blocks) => blocks_typ(t, &blocks),
            None => {
                t.push_str("#empty(");
                lit(t, &s.note);
                t.push_str(")\n\n");
            }
        }
    }
    note(t, omitted, what);
}

/// A typst string literal: only `\` and `"` are special inside one; control characters
/// are written as escapes.
fn lit(t: &mut String, s: &str) {
    t.push('"');
    for c in s.chars() {
        match c {
            '\\' => t.push_str("\\\\"),
            '"' => t.push_str("\\\""),
            '\n' => t.push_str("\\n"),
            '\t' => t.push_str("\\t"),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => t.push(c),
        }
    }
    t.push('"');
}

/// Text in markup: an embedded string literal.
fn text(t: &mut String, s: &str) {
    if !s.is_empty() {
        t.push('#');
        lit(t, s);
    }
}

fn blocks_typ(t: &mut String, blocks: &[Block]) {
    for (i, b) in blocks.iter().enumerate() {
        // A tight list sits close to what follows it; a boxed block needs more air.
        if i > 0
            && matches!(blocks[i - 1], Block::List { .. })
            && matches!(b, Block::Table(_) | Block::Code { .. } | Block::Quote(_))
        {
            t.push_str("#v(0.5em)\n");
        }
        block_typ(t, b);
    }
}

fn block_typ(t: &mut String, b: &Block) {
    match b {
        Block::Heading(level, content) => {
            let _ = write!(t, "#heading(level: {level}, outlined: false)[");
            inlines_typ(t, content);
            t.push_str("]\n\n");
        }
        Block::Paragraph(content) => {
            inlines_typ(t, content);
            t.push_str("\n\n");
        }
        Block::List { start, items } => {
            let tight = items
                .iter()
                .all(|i| i.len() <= 1 || matches!(i.as_slice(), [Block::Paragraph(_), Block::List { .. }]));
            match start {
                Some(n) => {
                    let _ = write!(t, "#enum(start: {n}, tight: {tight}, ");
                }
                None => {
                    let _ = write!(t, "#list(tight: {tight}, ");
                }
            }
            for item in items {
                t.push('[');
                let mut first = true;
                for b in item {
                    if !first {
                        // In a tight list a nested list follows its item's text closely.
                        t.push_str(if tight { "\n" } else { "\n\n" });
                    }
                    first = false;
                    match b {
                        Block::Paragraph(content) => inlines_typ(t, content),
                        other => block_typ(t, other),
                    }
                }
                t.push_str("], ");
            }
            t.push_str(")\n\n");
        }
        Block::Code { lang, text } => {
            t.push_str("#raw(block: true, ");
            if !lang.is_empty() {
                t.push_str("lang: ");
                lit(t, lang);
                t.push_str(", ");
            }
            lit(t, text);
            t.push_str(")\n\n");
        }
        Block::Quote(blocks) => {
            t.push_str("#quote(block: true)[");
            blocks_typ(t, blocks);
            t.push_str("]\n\n");
        }
        Block::Table(table) => {
            let n = table.head.len().max(1);
            let _ = write!(t, "#md-table({n}, (");
            for a in &table.align {
                t.push_str(match a {
                    Align::Right => "right, ",
                    Align::Center => "center, ",
                    Align::Left | Align::None => "left, ",
                });
            }
            t.push_str("), (");
            for c in &table.head {
                t.push('[');
                inlines_typ(t, c);
                t.push_str("], ");
            }
            t.push_str("), (");
            for r in &table.rows {
                for c in r {
                    t.push('[');
                    inlines_typ(t, c);
                    t.push_str("], ");
                }
            }
            t.push_str("))\n\n");
        }
        Block::Rule => t.push_str("#rule()\n\n"),
    }
}

fn inlines_typ(t: &mut String, inlines: &[Inline]) {
    for i in inlines {
        match i {
            Inline::Text(s) => text(t, s),
            Inline::Code(s) => {
                t.push_str("#raw(");
                lit(t, s);
                t.push(')');
            }
            Inline::Emph(c) => wrap(t, "emph", c),
            Inline::Strong(c) => wrap(t, "strong", c),
            Inline::Strike(c) => wrap(t, "strike", c),
            Inline::Link { url: Some(url), content } => {
                t.push_str("#link(");
                lit(t, url);
                t.push_str(")[");
                inlines_typ(t, content);
                t.push(']');
            }
            Inline::Link { url: None, content } => inlines_typ(t, content),
            Inline::LineBreak => t.push_str("#linebreak()"),
            Inline::SoftBreak => t.push_str("#\" \""),
        }
    }
}

fn wrap(t: &mut String, f: &str, content: &[Inline]) {
    let _ = write!(t, "#{f}[");
    inlines_typ(t, content);
    t.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_report_says_what_it_left_out() {
        let r = crate::model::tests::run(10);
        let mut m = Model::new(&r);
        m.limit(Limits { text_bytes: 450, sections: 100, rows: 3 });
        let source = source(&m);
        assert!(source.contains("7 more workers' findings are left out of this PDF"), "{source}");
        assert!(source.contains("7 more subtasks are left out of this PDF"));
        // The sections kept, and the per-agent table's heading (tables are not limited).
        assert_eq!(source.matches("#heading(level: 3)").count(), 5);
        assert!(source.contains("#heading(level: 3)[Per agent]"));
    }

    #[test]
    fn literals_escape_only_what_typst_strings_need() {
        let mut t = String::new();
        lit(&mut t, "a\"b\\c\nd#e]$f\u{7}");
        assert_eq!(t, r#""a\"b\\c\nd#e]$f""#);
    }
}

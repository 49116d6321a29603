//! The DOCX report, built with docx-rs: Word's built-in heading styles (`Heading1`… named
//! `heading 1`…, so the navigation pane and a table of contents see them), real tables,
//! numbered and bulleted lists with nesting, code in a monospaced style, quotes, external
//! hyperlinks, and the chart as a PNG.
//!
//! Levels: the report's sections are Heading 1, each step Heading 2, and headings inside
//! model text Heading 3 and below (one less than in HTML, where the title is `h1`).

use belt_core::{AgentStatus, RunStatus};
use docx_rs::{
    AbstractNumbering, AlignmentType, BorderType, BreakType, Docx, FieldCharType, Footer, Hyperlink,
    HyperlinkType, IndentLevel, InstrNUMPAGES, InstrPAGE, InstrText, Level, LevelJc, LevelOverride,
    LevelText, LineSpacing, LineSpacingType, NumberFormat, Numbering, NumberingId, PageMargin, Paragraph,
    ParagraphBorder, ParagraphBorderPosition, ParagraphBorders, Pic, Run, RunFonts, Shading,
    SpecialIndentType, Start, Style, StyleType, Table, TableBorder, TableBorderPosition, TableBorders,
    TableCell, TableRow, WidthType,
};

use crate::md::{Align, Block, Inline};
use crate::model::{Limits, Model, Section, cited_by, omitted_note, one_line, seconds, status_str};
use crate::{Format, ReportError};

/// A4 with 2.2 cm margins, in twentieths of a point.
const PAGE_W: u32 = 11906;
const PAGE_H: u32 = 16838;
const MARGIN: i32 = 1247;
const TEXT_W: usize = (PAGE_W as usize) - 2 * (MARGIN as usize);

const ACCENT: &str = "1F4E79";
const MUTED: &str = "5A6478";
const BORDER: &str = "D0D7E2";
const SANS: &str = "Calibri";
const MONO: &str = "Consolas";

/// Abstract list definitions (docx-rs itself defines abstract list 1 and list 1).
const BULLETS: usize = 10;

/// docx-rs holds the document's tree (about 50 bytes per byte of text) before writing it.
pub const LIMITS: Limits = Limits { text_bytes: 8 << 20, sections: 8000, rows: 5000 };
const DECIMAL: usize = 11;

enum Item {
    P(Box<Paragraph>),
    T(Box<Table>),
}

#[derive(Clone, Copy, Default)]
struct Ctx {
    /// Left indent in twips (lists and quotes).
    indent: i32,
    quote: bool,
    /// Nesting level of the current list.
    level: usize,
}

#[derive(Clone, Copy, Default)]
struct Marks {
    bold: bool,
    italic: bool,
    strike: bool,
}

struct Writer {
    items: Vec<Item>,
    numberings: Vec<Numbering>,
}

pub fn render(m: &Model<'_>) -> Result<Vec<u8>, ReportError> {
    let r = m.r;
    let mut w = Writer { items: Vec::new(), numberings: Vec::new() };

    // Cover.
    w.p(Paragraph::new().style("Kicker").add_run(Run::new().add_text("BELT · RUN REPORT")));
    w.p(Paragraph::new().style("Title").add_run(Run::new().add_text(&m.title)));
    let date = r.started_at.map(|t| t.format("%-d %B %Y, %H:%M UTC").to_string());
    let (color, status) = (run_status_color(r.status), r.status.as_str().replace('_', " "));
    w.p(Paragraph::new().style("Subtitle").add_run(Run::new().add_text(status).bold().color(color)).add_run(
        Run::new().add_text(format!(
            " · {}{}",
            r.pattern,
            date.map(|d| format!(" · {d}")).unwrap_or_default()
        )),
    ));
    if r.simulated {
        w.p(Paragraph::new()
            .style("Notice")
            .add_run(Run::new().add_text("Simulated run. ").bold())
            .add_run(Run::new().add_text(
                "The texts below were written by belt's offline simulated provider, not by a language model. \
                 Set a model (",
            ))
            .add_run(Run::new().add_text("--model provider/name").style("VerbatimChar"))
            .add_run(Run::new().add_text(") for real output.")));
    }
    let rows = m
        .meta
        .iter()
        .map(|(k, v)| {
            let value = if *k == "Run" {
                Run::new().add_text(v).style("VerbatimChar")
            } else {
                Run::new().add_text(v)
            };
            vec![
                cell(Paragraph::new().add_run(Run::new().add_text(*k).bold().color("2D3748")), 2000)
                    .shading(fill("F4F6F9")),
                cell(Paragraph::new().add_run(value), TEXT_W - 2000),
            ]
        })
        .map(TableRow::new)
        .collect();
    w.t(table(rows, &[2000, TEXT_W - 2000]));

    w.h(1, "Final synthesis");
    match &m.final_blocks {
        Some(blocks) => w.blocks(blocks, Ctx::default()),
        None => w.empty(&format!("No final output: {}", one_line(&r.stop_reason))),
    }
    w.sections("Syntheses", &m.syntheses, m.omitted.syntheses, "syntheses");
    w.sections("Worker findings", &m.workers, m.omitted.workers, "workers' findings");
    w.sections("Other steps", &m.others, m.omitted.others, "steps");

    if !m.groups.is_empty() {
        w.h(1, "Time and cost");
        let svg = crate::chart::svg(&m.groups, crate::chart::EMBEDDED);
        let (png, px_w, px_h) = crate::chart::png(&svg, 2.0)
            .map_err(|message| ReportError::Render { format: Format::Docx, message })?;
        let emu_w = TEXT_W as u32 * 635;
        let emu_h = (emu_w as u64 * px_h as u64 / px_w.max(1) as u64) as u32;
        w.p(Paragraph::new()
            .align(AlignmentType::Center)
            .add_run(Run::new().add_image(Pic::new_with_dimensions(png, px_w, px_h).size(emu_w, emu_h))));
        w.p(Paragraph::new().style("Caption").add_run(
            Run::new().add_text("Duration and cost of each agent, grouped by tier; failed steps in red."),
        ));
        let head = [
            "Tier",
            "Steps",
            "Done",
            "Failed",
            "Skipped",
            "Tokens in",
            "Tokens out",
            "Cost",
            "Time",
            "Longest",
        ];
        let rows: Vec<Vec<String>> = m
            .groups
            .iter()
            .map(|g| {
                vec![
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
                ]
            })
            .collect();
        w.t(data_table(
            &head,
            &rows,
            &[13, 7, 7, 8, 9, 11, 12, 11, 9, 13],
            &[false, true, true, true, true, true, true, true, true, true],
        ));
    }
    if !m.agent_rows.is_empty() {
        w.h(2, "Per agent");
        let rows: Vec<Vec<String>> = m.agent_rows.iter().map(|r| r.to_vec()).collect();
        w.t(data_table(
            &crate::model::AGENT_HEAD,
            &rows,
            &[16, 8, 10, 8, 12, 12, 14, 12],
            &[false, true, true, true, true, true, true, true],
        ));
    }

    w.h(1, "Failures and retries");
    if m.failures.is_empty() {
        w.p(Paragraph::new().add_run(Run::new().add_text("Every step succeeded at its first attempt.")));
    } else {
        let rows: Vec<Vec<String>> = m
            .failures
            .iter()
            .map(|a| {
                vec![
                    a.step.to_string(),
                    a.tier.to_string(),
                    status_str(a).to_string(),
                    a.outcome.attempts.to_string(),
                    crate::model::problem(a),
                ]
            })
            .collect();
        w.t(data_table(
            &["Step", "Tier", "Status", "Attempts", "Error"],
            &rows,
            &[18, 13, 12, 11, 46],
            &[false, false, false, true, false],
        ));
        w.omitted(m.omitted.failures, "failed or retried steps");
    }

    if !m.sources.is_empty() {
        w.h(1, "Sources");
        let num = w.numbering(DECIMAL, 0, 1);
        for s in &m.sources {
            let mut p =
                Paragraph::new().style("ListParagraph").numbering(NumberingId::new(num), IndentLevel::new(0));
            p = p.add_hyperlink(
                Hyperlink::new(&s.url, HyperlinkType::External)
                    .add_run(Run::new().add_text(s.title.as_deref().unwrap_or(&s.url)).style("Hyperlink")),
            );
            if s.title.is_some() {
                p = p.add_run(Run::new().add_text(format!(" {}", s.url)).color(MUTED).size(17));
            }
            p = p.add_run(Run::new().add_text(format!(" — cited by {}", cited_by(s))).color(MUTED).size(17));
            w.p(p);
        }
        w.omitted(m.omitted.sources, "sources");
    }

    if !r.plan.is_empty() {
        w.h(1, "Appendix: plan");
        let rows: Vec<Vec<String>> = r
            .plan
            .iter()
            .take(m.plan_rows)
            .enumerate()
            .map(|(i, s)| {
                vec![
                    (i + 1).to_string(),
                    one_line(&s.id),
                    one_line(&s.description),
                    one_line(&s.specialization),
                    s.priority.to_string(),
                    s.dependencies.join(", "),
                ]
            })
            .collect();
        w.t(data_table(
            &["#", "Id", "Subtask", "Specialization", "Priority", "Depends on"],
            &rows,
            &[6, 10, 44, 16, 10, 14],
            &[true, false, false, false, true, false],
        ));
        w.omitted(m.omitted.plan, "subtasks");
    }

    let mut doc = base();
    for n in w.numberings {
        doc = doc.add_numbering(n);
    }
    for item in w.items {
        doc = match item {
            Item::P(p) => doc.add_paragraph(*p),
            Item::T(t) => doc.add_table(*t),
        };
    }
    let mut xml = doc.build();
    xml.styles = default_normal(&xml.styles)?;
    let mut out = std::io::Cursor::new(Vec::new());
    xml.pack(&mut out).map_err(|e| ReportError::Render { format: Format::Docx, message: e.to_string() })?;
    Ok(out.into_inner())
}

/// Marks the Normal style as the default paragraph style (`w:default="1"`), which docx-rs
/// has no setter for. Without it a paragraph with no `w:pStyle` (most of the body text) has
/// no style at all for readers that follow the standard: python-docx's `paragraph.style`
/// raises on it, and converters fall back to their own defaults.
fn default_normal(styles: &[u8]) -> Result<Vec<u8>, ReportError> {
    const NORMAL: &str = r#"<w:style w:type="paragraph" w:styleId="Normal">"#;
    const DEFAULT: &str = r#"<w:style w:type="paragraph" w:default="1" w:styleId="Normal">"#;
    let xml = std::str::from_utf8(styles)
        .map_err(|e| ReportError::Render { format: Format::Docx, message: format!("styles.xml: {e}") })?;
    if !xml.contains(NORMAL) {
        // A docx-rs upgrade that writes the element differently must fail the tests here,
        // not ship documents whose body text has no style.
        return Err(ReportError::Render {
            format: Format::Docx,
            message: "styles.xml has no Normal paragraph style to mark as the default".into(),
        });
    }
    Ok(xml.replacen(NORMAL, DEFAULT, 1).into_bytes())
}

impl Writer {
    fn p(&mut self, p: Paragraph) {
        self.items.push(Item::P(Box::new(p)));
    }

    fn t(&mut self, t: Table) {
        self.items.push(Item::T(Box::new(t)));
        // Word joins adjacent tables; a paragraph keeps them apart.
        self.p(Paragraph::new().style("TableSpacer"));
    }

    /// A report heading: level 1 sections, level 2 steps.
    fn h(&mut self, level: usize, text: &str) {
        self.p(Paragraph::new().style(&format!("Heading{level}")).add_run(Run::new().add_text(text)));
    }

    /// Say what a size-limited report left out.
    fn omitted(&mut self, n: usize, what: &str) {
        if n > 0 {
            self.empty(&omitted_note(n, what, "document"));
        }
    }

    fn empty(&mut self, text: &str) {
        self.p(Paragraph::new().add_run(Run::new().add_text(text).italic().color(MUTED)));
    }

    /// A new list instance (so numbering restarts) of `abstract_id`, starting at `start`
    /// on `level`.
    fn numbering(&mut self, abstract_id: usize, level: usize, start: u64) -> usize {
        let id = self.numberings.len() + 100;
        let mut n = Numbering::new(id, abstract_id);
        if abstract_id == DECIMAL {
            n = n.add_override(LevelOverride::new(level).start(start.min(u32::MAX as u64) as usize));
        }
        self.numberings.push(n);
        id
    }

    fn sections(&mut self, title: &str, sections: &[Section<'_>], omitted: usize, what: &str) {
        if sections.is_empty() && omitted == 0 {
            return;
        }
        self.h(1, title);
        for s in sections {
            self.h(2, &s.heading);
            let mut p = Paragraph::new().style("Facts");
            for (i, f) in s.facts.iter().enumerate() {
                if i > 0 {
                    p = p.add_run(Run::new().add_text("  ·  ").color("A0AEC0"));
                }
                let mut run = Run::new().add_text(f);
                if i == 1 {
                    let color = match s.agent.status {
                        AgentStatus::Completed if s.agent.outcome.attempts > 1 => "8A5300",
                        AgentStatus::Completed => "1E6B34",
                        AgentStatus::Failed | AgentStatus::TimedOut => "9B2C1F",
                        // Statuses added later: neutral until given a color.
                        _ => "4A5568",
                    };
                    run = run.bold().color(color);
                }
                p = p.add_run(run);
            }
            self.p(p);
            match s.blocks() {
                Some(blocks) => self.blocks(&blocks, Ctx::default()),
                None => self.empty(&s.note),
            }
        }
        self.omitted(omitted, what);
    }

    fn blocks(&mut self, blocks: &[Block], ctx: Ctx) {
        for b in blocks {
            self.block(b, ctx);
        }
    }

    fn block(&mut self, b: &Block, ctx: Ctx) {
        match b {
            Block::Heading(level, content) => {
                let level = (*level as usize).saturating_sub(1).clamp(1, 6);
                let p = Paragraph::new().style(&format!("Heading{level}"));
                self.p(runs(p, content, Marks::default()));
            }
            Block::Paragraph(content) => self.p(runs(body(ctx), content, Marks::default())),
            Block::List { start, items } => {
                let level = ctx.level.min(8);
                let num = match start {
                    Some(n) => self.numbering(DECIMAL, level, *n),
                    None => self.numbering(BULLETS, level, 1),
                };
                let inner = Ctx { indent: 420 + 360 * level as i32, quote: ctx.quote, level: level + 1 };
                for item in items {
                    let mut rest = item.as_slice();
                    let first = Paragraph::new()
                        .style(if ctx.quote { "Quote" } else { "ListParagraph" })
                        .numbering(NumberingId::new(num), IndentLevel::new(level));
                    match rest.first() {
                        Some(Block::Paragraph(content)) => {
                            self.p(runs(first, content, Marks::default()));
                            rest = &rest[1..];
                        }
                        _ => self.p(first),
                    }
                    self.blocks(rest, inner);
                }
            }
            Block::Code { text, .. } => {
                let mut run = Run::new();
                for (i, line) in text.split('\n').enumerate() {
                    if i > 0 {
                        run = run.add_break(BreakType::TextWrapping);
                    }
                    run = run.add_text(line);
                }
                let mut p = Paragraph::new().style("SourceCode").add_run(run);
                if ctx.indent > 0 {
                    p = p.indent(Some(ctx.indent), None, None, None);
                }
                self.p(p);
            }
            Block::Quote(blocks) => {
                self.blocks(blocks, Ctx { indent: ctx.indent + 567, quote: true, level: ctx.level });
            }
            Block::Table(t) => {
                let n = t.head.len().max(1);
                let width = (TEXT_W - ctx.indent.max(0) as usize) / n;
                let align = |a: Align| match a {
                    Align::Right => AlignmentType::Right,
                    Align::Center => AlignmentType::Center,
                    Align::Left | Align::None => AlignmentType::Left,
                };
                let mut rows = Vec::with_capacity(t.rows.len() + 1);
                rows.push(TableRow::new(
                    t.head
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let p = Paragraph::new().style("TableText").align(align(t.align[i]));
                            cell(runs(p, c, Marks { bold: true, ..Marks::default() }), width)
                                .shading(fill("EEF2F7"))
                        })
                        .collect(),
                ));
                for r in &t.rows {
                    rows.push(TableRow::new(
                        r.iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let p = Paragraph::new().style("TableText").align(align(t.align[i]));
                                cell(runs(p, c, Marks::default()), width)
                            })
                            .collect(),
                    ));
                }
                let mut table = table(rows, &vec![width; n]);
                if ctx.indent > 0 {
                    table = table.indent(ctx.indent);
                }
                self.t(table);
            }
            Block::Rule => self.p(Paragraph::new().style("Rule")),
        }
    }
}

/// A body paragraph in its context (quote, list indentation).
fn body(ctx: Ctx) -> Paragraph {
    let mut p = Paragraph::new();
    if ctx.quote {
        p = p.style("Quote");
    }
    if ctx.indent > 0 {
        p = p.indent(Some(ctx.indent), None, None, None);
    }
    p
}

fn runs(mut p: Paragraph, inlines: &[Inline], marks: Marks) -> Paragraph {
    for i in inlines {
        p = match i {
            Inline::Text(t) => p.add_run(marked(Run::new().add_text(t), marks)),
            Inline::Code(t) => p.add_run(marked(Run::new().add_text(t).style("VerbatimChar"), marks)),
            Inline::Emph(c) => runs(p, c, Marks { italic: true, ..marks }),
            Inline::Strong(c) => runs(p, c, Marks { bold: true, ..marks }),
            Inline::Strike(c) => runs(p, c, Marks { strike: true, ..marks }),
            Inline::Link { url: Some(url), content } => {
                let mut link = Hyperlink::new(url, HyperlinkType::External);
                for run in link_runs(content, marks) {
                    link = link.add_run(run);
                }
                p.add_hyperlink(link)
            }
            Inline::Link { url: None, content } => runs(p, content, marks),
            Inline::LineBreak => p.add_run(Run::new().add_break(BreakType::TextWrapping)),
            Inline::SoftBreak => p.add_run(marked(Run::new().add_text(" "), marks)),
        };
    }
    p
}

/// The runs of a link's text (a hyperlink holds runs only).
fn link_runs(inlines: &[Inline], marks: Marks) -> Vec<Run> {
    let mut out = Vec::new();
    fn walk(out: &mut Vec<Run>, inlines: &[Inline], marks: Marks) {
        for i in inlines {
            match i {
                Inline::Text(t) => out.push(marked(Run::new().add_text(t).style("Hyperlink"), marks)),
                Inline::Code(t) => out.push(marked(Run::new().add_text(t).style("VerbatimChar"), marks)),
                Inline::Emph(c) => walk(out, c, Marks { italic: true, ..marks }),
                Inline::Strong(c) => walk(out, c, Marks { bold: true, ..marks }),
                Inline::Strike(c) => walk(out, c, Marks { strike: true, ..marks }),
                Inline::Link { content, .. } => walk(out, content, marks),
                Inline::LineBreak | Inline::SoftBreak => {
                    out.push(Run::new().add_text(" ").style("Hyperlink"))
                }
            }
        }
    }
    walk(&mut out, inlines, marks);
    out
}

fn marked(mut run: Run, marks: Marks) -> Run {
    if marks.bold {
        run = run.bold();
    }
    if marks.italic {
        run = run.italic();
    }
    if marks.strike {
        run = run.strike();
    }
    run
}

fn fill(color: &str) -> Shading {
    Shading::new().fill(color).color("auto")
}

fn cell(p: Paragraph, width: usize) -> TableCell {
    TableCell::new().add_paragraph(p).width(width, WidthType::Dxa)
}

fn table(rows: Vec<TableRow>, widths: &[usize]) -> Table {
    let border = |pos| TableBorder::new(pos).border_type(BorderType::Single).size(4).color(BORDER);
    let borders = TableBorders::new()
        .set(border(TableBorderPosition::Top))
        .set(border(TableBorderPosition::Bottom))
        .set(border(TableBorderPosition::Left))
        .set(border(TableBorderPosition::Right))
        .set(border(TableBorderPosition::InsideH))
        .set(border(TableBorderPosition::InsideV));
    Table::new(rows).set_grid(widths.to_vec()).width(widths.iter().sum(), WidthType::Dxa).set_borders(borders)
}

/// A table with a shaded header row; `weights` share the text width, `right` aligns
/// numeric columns.
fn data_table(head: &[&str], rows: &[Vec<String>], weights: &[usize], right: &[bool]) -> Table {
    let total: usize = weights.iter().sum::<usize>().max(1);
    let widths: Vec<usize> = weights.iter().map(|w| TEXT_W * w / total).collect();
    let align = |i: usize| {
        if right.get(i).copied().unwrap_or(false) { AlignmentType::Right } else { AlignmentType::Left }
    };
    let mut out = Vec::with_capacity(rows.len() + 1);
    out.push(TableRow::new(
        head.iter()
            .enumerate()
            .map(|(i, h)| {
                let p = Paragraph::new()
                    .style("TableText")
                    .align(align(i))
                    .add_run(Run::new().add_text(*h).bold());
                cell(p, widths[i]).shading(fill("EEF2F7"))
            })
            .collect(),
    ));
    for (n, r) in rows.iter().enumerate() {
        out.push(TableRow::new(
            r.iter()
                .enumerate()
                .map(|(i, v)| {
                    let p =
                        Paragraph::new().style("TableText").align(align(i)).add_run(Run::new().add_text(v));
                    let c = cell(p, widths[i.min(widths.len() - 1)]);
                    if n % 2 == 1 { c.shading(fill("FAFBFC")) } else { c }
                })
                .collect(),
        ));
    }
    table(out, &widths)
}

fn run_status_color(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Completed => "1E6B34",
        RunStatus::Partial | RunStatus::BudgetExhausted | RunStatus::Queued | RunStatus::Running => "8A5300",
        RunStatus::Failed | RunStatus::Interrupted => "9B2C1F",
        _ => "4A5568",
    }
}

/// The document with its page, styles, list definitions and footer.
fn base() -> Docx {
    let spacing = |before: u32, after: u32| LineSpacing::new().before(before).after(after);
    let fonts = |f: &str| RunFonts::new().ascii(f).hi_ansi(f).cs(f).east_asia(f);
    let paragraph = |id: &str, name: &str| {
        Style::new(id, StyleType::Paragraph).name(name).based_on("Normal").next("Normal").q_format(true)
    };
    let mut doc = Docx::new()
        .page_size(PAGE_W, PAGE_H)
        .page_margin(PageMargin {
            top: 1304,
            left: MARGIN,
            bottom: 1247,
            right: MARGIN,
            header: 709,
            footer: 567,
            gutter: 0,
        })
        .default_fonts(fonts(SANS))
        .default_size(21)
        .default_line_spacing(LineSpacing::new().after(140).line(270).line_rule(LineSpacingType::Auto))
        .add_style(paragraph("Kicker", "Kicker").size(16).bold().color(ACCENT).line_spacing(spacing(0, 60)))
        .add_style(paragraph("Title", "Title").size(44).bold().color("1A202C").line_spacing(spacing(0, 120)))
        .add_style(paragraph("Subtitle", "Subtitle").size(21).color(MUTED).line_spacing(spacing(0, 240)))
        .add_style(paragraph("Facts", "Facts").size(17).color(MUTED).line_spacing(spacing(0, 200)))
        .add_style(
            paragraph("Caption", "caption").size(18).italic().color(MUTED).align(AlignmentType::Center),
        )
        .add_style(paragraph("ListParagraph", "List Paragraph").line_spacing(spacing(0, 60)))
        .add_style(
            paragraph("TableText", "Table Text")
                .size(18)
                .line_spacing(LineSpacing::new().before(40).after(40)),
        )
        .add_style(
            paragraph("TableSpacer", "Table Spacer").size(8).line_spacing(
                LineSpacing::new().before(0).after(0).line(120).line_rule(LineSpacingType::Auto),
            ),
        )
        .add_style(
            Style::new("Hyperlink", StyleType::Character)
                .name("Hyperlink")
                .color("1A5FB4")
                .underline("single"),
        )
        .add_style(
            Style::new("VerbatimChar", StyleType::Character)
                .name("Verbatim Char")
                .fonts(fonts(MONO))
                .size(19),
        );
    let headings = [
        (1, 30, ACCENT, 480, 160),
        (2, 25, ACCENT, 360, 60),
        (3, 23, "1A202C", 280, 100),
        (4, 22, "1A202C", 240, 80),
        (5, 21, "1A202C", 200, 60),
        (6, 21, "4A5568", 200, 60),
    ];
    for (level, size, color, before, after) in headings {
        let mut s = paragraph(&format!("Heading{level}"), &format!("heading {level}"))
            .size(size)
            .bold()
            .color(color)
            .line_spacing(spacing(before, after));
        s.paragraph_property = s.paragraph_property.keep_next(true).keep_lines(true).outline_lvl(level - 1);
        if level == 1 {
            s.paragraph_property = s.paragraph_property.set_borders(
                ParagraphBorders::with_empty().set(
                    ParagraphBorder::new(ParagraphBorderPosition::Bottom)
                        .val(BorderType::Single)
                        .size(6)
                        .space(4)
                        .color("B4C6DC"),
                ),
            );
        }
        if level == 6 {
            s = s.italic();
        }
        doc = doc.add_style(s);
    }
    // Code blocks on a grey ground, quotes and rules with a border.
    let mut code =
        paragraph("SourceCode", "Source Code").fonts(fonts(MONO)).size(17).line_spacing(spacing(60, 180));
    code.paragraph_property = code.paragraph_property.shading(fill("F6F8FA"));
    let mut quote = paragraph("Quote", "Quote").italic().color("4A5568");
    quote.paragraph_property = quote.paragraph_property.set_borders(
        ParagraphBorders::with_empty().set(
            ParagraphBorder::new(ParagraphBorderPosition::Left)
                .val(BorderType::Single)
                .size(18)
                .space(8)
                .color("CBD5E0"),
        ),
    );
    let mut rule = paragraph("Rule", "Horizontal Rule").size(8);
    rule.paragraph_property = rule.paragraph_property.set_borders(
        ParagraphBorders::with_empty().set(
            ParagraphBorder::new(ParagraphBorderPosition::Bottom)
                .val(BorderType::Single)
                .size(6)
                .space(1)
                .color(BORDER),
        ),
    );
    let mut notice = paragraph("Notice", "Notice").size(19).line_spacing(spacing(120, 240));
    let edge = |pos| ParagraphBorder::new(pos).val(BorderType::Single).size(4).space(6).color("E9C46A");
    notice.paragraph_property = notice.paragraph_property.shading(fill("FFF8E6")).set_borders(
        ParagraphBorders::with_empty()
            .set(edge(ParagraphBorderPosition::Top))
            .set(edge(ParagraphBorderPosition::Bottom))
            .set(edge(ParagraphBorderPosition::Left))
            .set(edge(ParagraphBorderPosition::Right)),
    );
    doc = doc.add_style(code).add_style(quote).add_style(rule).add_style(notice);

    let bullets = ["•", "◦", "▪"];
    let mut bullet = AbstractNumbering::new(BULLETS);
    let mut decimal = AbstractNumbering::new(DECIMAL);
    for level in 0..9 {
        let left = 420 + 360 * level as i32;
        bullet = bullet.add_level(
            Level::new(
                level,
                Start::new(1),
                NumberFormat::new("bullet"),
                LevelText::new(bullets[level % 3]),
                LevelJc::new("left"),
            )
            .indent(Some(left), Some(SpecialIndentType::Hanging(300)), None, None),
        );
        decimal = decimal.add_level(
            Level::new(
                level,
                Start::new(1),
                NumberFormat::new("decimal"),
                LevelText::new(format!("%{}.", level + 1)),
                LevelJc::new("left"),
            )
            .indent(Some(left), Some(SpecialIndentType::Hanging(360)), None, None),
        );
    }
    let field = |instr: InstrText| {
        [
            Run::new().add_field_char(FieldCharType::Begin, false),
            Run::new().add_instr_text(instr),
            Run::new().add_field_char(FieldCharType::Separate, false),
            Run::new().add_text("1"),
            Run::new().add_field_char(FieldCharType::End, false),
        ]
    };
    let mut page = Paragraph::new().align(AlignmentType::Center).size(16).color(MUTED);
    for run in field(InstrText::PAGE(InstrPAGE::new())) {
        page = page.add_run(run.size(16).color(MUTED));
    }
    page = page.add_run(Run::new().add_text(" / ").size(16).color(MUTED));
    for run in field(InstrText::NUMPAGES(InstrNUMPAGES::new())) {
        page = page.add_run(run.size(16).color(MUTED));
    }
    doc.add_abstract_numbering(bullet)
        .add_abstract_numbering(decimal)
        .footer(Footer::new().add_paragraph(page))
}

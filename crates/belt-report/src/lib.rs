//! belt-report: turns a finished run ([`RunResult`]) into a document a person reads —
//! Markdown, HTML, PDF or DOCX.
//!
//! Every format has the same content, in the same order: the title and a metadata table
//! (run id, date, pattern, models per tier, agents, status, duration, tokens, cost); the
//! final synthesis first; then the intermediate syntheses; then each worker's findings
//! under its subtask; time and cost per tier, with a chart of duration and cost per agent
//! grouped by tier (SVG in HTML and PDF, a PNG in DOCX, a table in Markdown); failures
//! and retries; the sources the outputs cite; and the plan as an appendix.
//!
//! Text written by models is data. It is parsed as Markdown once ([`md`](crate::md)) and
//! every renderer writes it through its own escaping: it cannot add HTML or script to the
//! HTML report, typst code to the PDF's source, or XML to the DOCX. Its headings are
//! placed so they nest under the report's own, one level down, with no level left out.
//!
//! ```
//! use belt_core::{RunResult, RunStatus, UsageTotals};
//! let result = RunResult {
//!     run_id: "0193".into(), status: RunStatus::Completed, stop_reason: "all steps completed".into(),
//!     pattern: "cascade".into(), task: "Impact of AI on healthcare".into(), plan: vec![],
//!     agents: vec![], final_output: Some("## Summary\nAI helps.".into()),
//!     usage: UsageTotals::default(), cost_usd: 0.0, duration_ms: 1200, documents: vec![],
//!     simulated: true, shape: vec![], started_at: None, segments: vec![], caps: vec![], sources: vec![], agent_totals: vec![],
//!     degradations: vec![],
//! };
//! let md = belt_report::markdown(&result);
//! assert!(md.starts_with("# Impact of AI on healthcare"));
//! // The model's `##` under the report's `## Final synthesis`:
//! assert!(md.contains("\n### Summary"));
//!
//! let mut html = Vec::new();
//! belt_report::render(&result, belt_report::Format::Html, &mut html).unwrap();
//! assert!(String::from_utf8(html).unwrap().contains("<h3>Summary</h3>"));
//! assert_eq!(belt_report::file_name(&result, "md"), "impact-of-ai-on-healthcare-0193.md");
//! ```
//!
//! The PDF renderer (typst, compiled in-process with the fonts of `typst-assets`, so it
//! needs no network and no installed fonts) is behind the default feature `pdf`; without
//! it, [`Format::Pdf`] returns [`ReportError::Unsupported`].
//!
//! Size: Markdown and HTML always hold every section. The paged formats hold a laid-out
//! document in memory (typst about 1 MiB per page), so past about 4 MiB (PDF) or 8 MiB
//! (DOCX) of model text they keep whole sections in report order while they fit and say
//! how many they left out: a run of 100,000 agents cannot exhaust memory at its very end.

use std::io::Write;

use belt_core::RunResult;

mod chart;
mod cost;
mod docx;
mod html;
mod markdown;
pub mod md;
mod model;
#[cfg(feature = "pdf")]
mod pdf;
/// English for counts and roles (in the core, where patterns write roles too).
pub use belt_core::words;

pub use cost::Cost;
pub use model::truncated_note;

/// A document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Markdown,
    Html,
    Pdf,
    Docx,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Markdown, Format::Html, Format::Pdf, Format::Docx];

    /// The file extension: `md`, `html`, `pdf`, `docx`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
        }
    }

    /// The name used in events and `RunResult::documents`: `markdown`, `html`, `pdf`, `docx`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
        }
    }

    /// Whether this build can render the format (PDF needs the `pdf` feature).
    pub fn available(self) -> bool {
        self != Format::Pdf || cfg!(feature = "pdf")
    }

    /// A comma-separated list (`md,html`, `pdf`, `all`) into formats, in the order of
    /// [`Format::ALL`], without repeats.
    pub fn parse_list(list: &str) -> Result<Vec<Format>, ReportError> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("all") {
                out.extend(Format::ALL);
            } else {
                out.push(item.parse()?);
            }
        }
        if out.is_empty() {
            return Err(ReportError::UnknownFormat(list.to_string()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl std::str::FromStr for Format {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Markdown),
            "html" | "htm" => Ok(Format::Html),
            "pdf" => Ok(Format::Pdf),
            "docx" | "word" => Ok(Format::Docx),
            _ => Err(ReportError::UnknownFormat(s.to_string())),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

/// What can go wrong while rendering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("unknown format `{0}`; expected md, html, pdf, docx or all (comma-separated)")]
    UnknownFormat(String),
    #[error("{0} output is not part of this build (it was built without the `pdf` feature of belt-report)")]
    Unsupported(Format),
    #[error("rendering the {format} report failed: {message}")]
    Render { format: Format, message: String },
    #[error("writing the report failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Render `result` in `format` into `out`.
pub fn render(result: &RunResult, format: Format, out: &mut impl Write) -> Result<(), ReportError> {
    let mut model = model::Model::new(result);
    match format {
        Format::Markdown => out.write_all(markdown::render(&model).as_bytes())?,
        Format::Html => out.write_all(html::render(&model).as_bytes())?,
        Format::Docx => {
            model.limit(docx::LIMITS);
            out.write_all(&docx::render(&model)?)?
        }
        #[cfg(feature = "pdf")]
        Format::Pdf => {
            model.limit(pdf::LIMITS);
            out.write_all(&pdf::render(&model)?)?
        }
        #[cfg(not(feature = "pdf"))]
        Format::Pdf => return Err(ReportError::Unsupported(Format::Pdf)),
    }
    out.flush()?;
    Ok(())
}

/// The report as Markdown.
pub fn markdown(r: &RunResult) -> String {
    markdown::render(&model::Model::new(r))
}

/// The report as one self-contained HTML file (inline CSS and SVG, no scripts, nothing
/// fetched).
pub fn html(r: &RunResult) -> String {
    html::render(&model::Model::new(r))
}

/// The chart of duration and cost per agent, grouped by tier, as an SVG document.
pub fn chart_svg(r: &RunResult) -> String {
    chart::svg(&model::Model::new(r).groups, chart::SANS)
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
    let id: String = r.run_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    let id = id.trim_matches('-');
    let slug = if slug.is_empty() { "belt-run" } else { slug };
    let ext: String = ext.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    if id.is_empty() { format!("{slug}.{ext}") } else { format!("{slug}-{id}.{ext}") }
}

/// Place every ATX heading of `text` under a heading of level `parent` (outside code
/// fences), so embedded model output nests under the report's headings: the text's top
/// level becomes `parent + 1` and deeper ones keep their distance to it (at most `######`).
/// A fixed shift would turn a model's `##` under the report's `##` into `####`, leaving a
/// level out of the outline.
pub fn demote(text: &str, parent: usize) -> String {
    let mut fence = false;
    let mut headings = Vec::new();
    for line in text.trim().lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
        }
        let hashes = t.chars().take_while(|&c| c == '#').count();
        // Four spaces of indentation make a code line, not a heading.
        let heading = !fence && indent < 4 && (1..=6).contains(&hashes) && t[hashes..].starts_with(' ');
        headings.push(heading.then_some(hashes));
    }
    let top = headings.iter().flatten().min().copied().unwrap_or(1);
    let mut out = String::with_capacity(text.len() + 64);
    for (line, heading) in text.trim().lines().zip(headings) {
        match heading {
            Some(hashes) => {
                let level = (hashes - top + parent + 1).min(6);
                out.push_str(&"#".repeat(level));
                out.push_str(&line.trim_start()[hashes..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// `text` without its first heading when that heading says `title` again (a worker that
/// opens its answer with its subtask, under a report heading that already shows it).
pub(crate) fn without_title<'a>(text: &'a str, title: &str) -> std::borrow::Cow<'a, str> {
    let words = |s: &str| -> Vec<String> {
        s.trim_start_matches('#')
            .trim()
            .trim_end_matches('#')
            .trim_end_matches(['.', ':', ' '])
            .split_whitespace()
            .map(str::to_lowercase)
            .collect()
    };
    let title = words(title);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            break;
        }
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line.len() - t.len() < 4 && t[hashes..].starts_with(' ') {
            if !title.is_empty() && words(t) == title {
                return format!("{}{}", &text[..offset], &text[offset + line.len()..]).into();
            }
            break;
        }
        offset += line.len();
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demote_skips_code_fences_and_caps_at_six() {
        let text = "# A\ntext\n```\n# not a heading\n```\n##### deep\n#nospace\n    # indented code";
        assert_eq!(
            demote(text, 2),
            "### A\ntext\n```\n# not a heading\n```\n###### deep\n#nospace\n    # indented code"
        );
    }

    #[test]
    fn demote_places_the_top_heading_one_under_its_parent() {
        // A model that starts at `##` under the report's `##` gets `###`, not `####`.
        assert_eq!(demote("## A\ntext\n### B\n## C", 2), "### A\ntext\n#### B\n### C");
        assert_eq!(demote("#### Deep only", 3), "#### Deep only");
        assert_eq!(demote("no headings", 3), "no headings");
    }

    #[test]
    fn a_heading_repeating_the_title_goes() {
        let text = "*Simulated.*\n\n## Risks: the main risks.\n\nBody\n## Risks: the main risks";
        assert_eq!(
            without_title(text, "Risks: the main  risks"),
            "*Simulated.*\n\n\nBody\n## Risks: the main risks"
        );
        assert_eq!(without_title("## Other\n## Risks", "Risks"), "## Other\n## Risks");
        assert_eq!(without_title("Risks\nBody", "Risks"), "Risks\nBody");
        assert_eq!(without_title("```\n# Risks\n```", "Risks"), "```\n# Risks\n```");
        assert_eq!(without_title("# \nBody", ""), "# \nBody");
    }

    #[test]
    fn file_names_are_slugs_that_cannot_escape() {
        let mut r: RunResult = serde_json_like();
        r.task = "../../etc/passwd <script>".into();
        r.run_id = "ab/../cd".into();
        let name = file_name(&r, "md");
        assert_eq!(name, "etc-passwd-script-abcd.md");
        assert!(!name.contains('/'));
        r.task = "…".into();
        r.run_id = "..".into();
        assert_eq!(file_name(&r, "../pdf"), "belt-run.pdf");
    }

    #[test]
    fn format_lists() {
        assert_eq!(Format::parse_list("md").unwrap(), vec![Format::Markdown]);
        assert_eq!(Format::parse_list("pdf, md,pdf").unwrap(), vec![Format::Markdown, Format::Pdf]);
        assert_eq!(Format::parse_list("all").unwrap(), Format::ALL.to_vec());
        assert!(Format::parse_list("md,odt").is_err());
        assert!(Format::parse_list(" , ").is_err());
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
            segments: Vec::new(),
            caps: Vec::new(),
            sources: Vec::new(),
            degradations: Vec::new(),
            agent_totals: Vec::new(),
        }
    }
}

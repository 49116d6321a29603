//! Round trips of every format: the PDF's text (pdftotext) has the headings, a table cell
//! and the final synthesis; the DOCX parses (zip + XML) with Heading styles, tables and the
//! chart; the HTML parses, holds the SVG chart and nothing active from model output. Model
//! text that attacks each format comes out as plain text.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::Read;
#[cfg(feature = "pdf")]
use std::process::Command;
#[cfg(feature = "pdf")]
use std::sync::OnceLock;

use belt_report::Format;
use quick_xml::events::Event;

fn render(r: &belt_core::RunResult, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    belt_report::render(r, format, &mut out).unwrap_or_else(|e| panic!("{format}: {e}"));
    out
}

#[cfg(feature = "pdf")]
/// Whitespace collapsed and words joined across hyphenated line ends, so phrases can be
/// searched in extracted text.
fn normalize(text: &str) -> String {
    text.replace("-\n", "").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(not(feature = "pdf"))]
#[test]
fn pdf_is_unsupported_without_the_feature() {
    let err = belt_report::render(&common::rich(), Format::Pdf, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, belt_report::ReportError::Unsupported(Format::Pdf)), "{err}");
    assert!(!Format::Pdf.available());
}

/// `pdftotext` from poppler-utils, installed once if missing (Debian and Ubuntu, as root).
#[cfg(feature = "pdf")]
fn pdftotext(pdf: &[u8]) -> String {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let present = || Command::new("pdftotext").arg("-v").output().is_ok_and(|o| o.status.success());
        if present() {
            return Ok(());
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let install = ["install", "-y", "-q", "--no-install-recommends", "poppler-utils"];
        if !apt(&install) {
            apt(&["update", "-q"]);
            apt(&install);
        }
        if present() {
            Ok(())
        } else {
            Err("pdftotext is missing and `apt-get install poppler-utils` failed; install poppler-utils"
                .into())
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
    let dir = std::env::temp_dir().join(format!(
        "belt-report-pdf-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .arg("-enc")
        .arg("UTF-8")
        .arg(&path)
        .arg("-")
        .output()
        .expect("run pdftotext");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "pdftotext failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 text")
}

#[cfg(feature = "pdf")]
#[test]
fn pdf_text_has_the_headings_a_table_cell_and_the_final_synthesis() {
    let r = common::rich();
    let pdf = render(&r, Format::Pdf);
    assert!(pdf.starts_with(b"%PDF-"));
    let text = normalize(&pdftotext(&pdf));
    for heading in [
        "Final synthesis",
        "Syntheses",
        "Worker findings",
        "Time and cost",
        "Failures and retries",
        "Sources",
        "Appendix: plan",
        "Executive summary",
        "Contents",
    ] {
        assert!(text.contains(heading), "missing heading {heading:?} in {text}");
    }
    // Cells of the model's table, of the metadata table and of the failures table.
    for cell in ["Asia-Pacific", "Confidence", "01a1fd3e-0000-7000-8000-000000000001", "worker/003"] {
        assert!(text.contains(cell), "missing cell {cell:?}");
    }
    assert!(text.contains("The final synthesis sentence: validate locally, then scale."), "{text}");
    assert!(text.contains("def total(xs):"), "code block");
    // The hostile worker's text is there as text: nothing it says was executed.
    for literal in [
        "#set page(width: 1pt)",
        "#let x = 1",
        "$x^2$",
        "<script>alert('pwned')</script>",
        "#panic(\"no\")",
        "= not a typst heading",
        "#emph[typst] and ]] closing",
    ] {
        assert!(text.contains(literal), "missing literal {literal:?} in {text}");
    }
}

/// Random strings of typst's and Markdown's special characters must always compile.
#[cfg(feature = "pdf")]
#[test]
fn pdf_survives_random_special_characters() {
    let mut r = common::cascade(6);
    let charset: Vec<char> =
        "#[]{}()$\\\"'*_`~<>@=-+/:;.,!?^&%|\n \t\u{0}\u{1b}\u{2028}éß漢😀".chars().collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (i, a) in r.agents.iter_mut().enumerate() {
        let mut s = format!("marker{i} ");
        for _ in 0..400 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(charset[(seed % charset.len() as u64) as usize]);
        }
        a.output = Some(s.into());
    }
    r.task = "#}]) \"\\ $ <x>".into();
    let text = normalize(&pdftotext(&render(&r, Format::Pdf)));
    assert!(text.contains("marker3"), "{text}");
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip archive");
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        files.insert(f.name().to_string(), data);
    }
    files
}

/// Every element's (name, attributes) and the text, from well-formed XML.
struct Xml {
    elements: Vec<(String, Vec<(String, String)>)>,
    text: String,
}

fn parse_xml(data: &[u8]) -> Xml {
    let mut reader = quick_xml::Reader::from_reader(data);
    let mut xml = Xml { elements: Vec::new(), text: String::new() };
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("a well-formed attribute");
                        let value = a
                            .decoded_and_normalized_value(
                                quick_xml::XmlVersion::Implicit1_0,
                                reader.decoder(),
                            )
                            .expect("an escaped attribute value")
                            .to_string();
                        (String::from_utf8(a.key.as_ref().to_vec()).unwrap(), value)
                    })
                    .collect();
                xml.elements.push((name, attrs));
            }
            Ok(Event::Text(t)) => xml.text.push_str(&t.decode().expect("text")),
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8(r.to_vec()).unwrap();
                let c = match name.as_str() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    n if n.starts_with("#x") => {
                        char::from_u32(u32::from_str_radix(&n[2..], 16).unwrap()).unwrap()
                    }
                    n if n.starts_with('#') => char::from_u32(n[1..].parse().unwrap()).unwrap(),
                    n => panic!("an entity XML does not define: &{n};"),
                };
                xml.text.push(c);
            }
            Ok(Event::CData(_)) => panic!("no CDATA expected"),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed at {}: {e}", reader.buffer_position()),
        }
        buf.clear();
    }
    xml
}

#[test]
fn docx_parses_with_heading_styles_tables_links_and_the_chart() {
    let files = unzip(&render(&common::rich(), Format::Docx));
    for (name, data) in &files {
        if name.ends_with(".xml") || name.ends_with(".rels") {
            parse_xml(data);
        }
    }
    let doc = parse_xml(&files["word/document.xml"]);
    let styles_used: Vec<&str> = doc
        .elements
        .iter()
        .filter(|(n, _)| n == "w:pStyle")
        .flat_map(|(_, a)| a.iter().filter(|(k, _)| k == "w:val").map(|(_, v)| v.as_str()))
        .collect();
    for s in ["Title", "Heading1", "Heading2", "Heading3", "SourceCode", "Quote"] {
        assert!(styles_used.contains(&s), "no paragraph in style {s}: {styles_used:?}");
    }
    let tables = doc.elements.iter().filter(|(n, _)| n == "w:tbl").count();
    assert!(tables >= 5, "metadata, model table, tiers, failures, plan: {tables}");
    assert!(doc.elements.iter().any(|(n, _)| n == "w:numPr"), "lists are numbered paragraphs");
    assert!(doc.elements.iter().any(|(n, _)| n == "w:hyperlink"));
    assert!(doc.elements.iter().any(|(n, _)| n == "wp:inline"), "the chart is an inline picture");
    for t in [
        "Final synthesis",
        "Asia-Pacific",
        "The final synthesis sentence: validate locally, then scale.",
        "#set page(width: 1pt)",
        "<script>alert('pwned')</script>",
    ] {
        assert!(doc.text.contains(t), "missing {t:?}");
    }
    assert!(
        !doc.text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
        "control characters reach the XML"
    );

    // The heading styles are Word's own, so the navigation pane and tables of contents see them.
    let styles = parse_xml(&files["word/styles.xml"]);
    let ids: Vec<&str> = styles
        .elements
        .iter()
        .filter(|(n, _)| n == "w:style")
        .flat_map(|(_, a)| a.iter().filter(|(k, _)| k == "w:styleId").map(|(_, v)| v.as_str()))
        .collect();
    for s in ["Heading1", "Heading2", "Heading3", "Heading4", "Heading5", "Heading6", "Title"] {
        assert!(ids.contains(&s), "{s} not defined: {ids:?}");
    }
    let names: Vec<&str> = styles
        .elements
        .iter()
        .filter(|(n, _)| n == "w:name")
        .flat_map(|(_, a)| a.iter().map(|(_, v)| v.as_str()))
        .collect();
    assert!(names.contains(&"heading 1") && names.contains(&"heading 3"), "{names:?}");

    let rels = parse_xml(&files["word/_rels/document.xml.rels"]);
    let targets: Vec<&str> = rels
        .elements
        .iter()
        .flat_map(|(_, a)| a.iter().filter(|(k, _)| k == "Target").map(|(_, v)| v.as_str()))
        .collect();
    assert!(targets.contains(&"https://www.who.int/reports/2024?a=1&b=2"), "{targets:?}");
    assert!(
        !targets.iter().any(|t| t.to_ascii_lowercase().starts_with("javascript:") || t.starts_with("data:"))
    );
    let pngs: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(n, _)| n.starts_with("word/media/") && n.ends_with(".png"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(pngs.len(), 1);
    assert!(pngs[0].starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn html_parses_has_the_chart_and_nothing_active_from_model_output() {
    let html = String::from_utf8(render(&common::rich(), Format::Html)).unwrap();
    let doc = parse_xml(html.as_bytes());
    let count = |name: &str| doc.elements.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("svg"), 1, "one inline SVG: the chart");
    assert!(count("path") > 0 && count("table") >= 5);
    for forbidden in ["script", "iframe", "img", "object", "embed", "link", "base", "form", "style"] {
        let allowed = usize::from(forbidden == "style"); // the report's own stylesheet
        assert_eq!(count(forbidden), allowed, "<{forbidden}> in the HTML");
    }
    for (name, attrs) in &doc.elements {
        for (k, v) in attrs {
            assert!(!k.to_ascii_lowercase().starts_with("on"), "event handler {k} on <{name}>");
            assert!(k != "src", "<{name} src=…> would fetch {v}");
            if k == "href" {
                assert!(
                    v.starts_with("https://")
                        || v.starts_with("http://")
                        || v.starts_with("mailto:")
                        || v.starts_with('#'),
                    "unsafe link {v}"
                );
            }
            if k == "style" {
                assert!(v.starts_with("background:#") && v.len() == "background:#123456".len(), "style {v}");
            }
        }
    }
    assert!(html.contains("Content-Security-Policy"));
    let css = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
    assert!(!css.contains("url(") && !css.contains("@import"), "the stylesheet fetches nothing");
    for t in [
        "<script>alert('pwned')</script>",
        "#set page(width: 1pt)",
        "Asia-Pacific",
        "validate locally, then scale.",
    ] {
        assert!(doc.text.contains(t), "missing text {t:?}");
    }
    // Structure survived: headings, nested lists, a table with alignment, code, quote, links.
    for needle in [
        "<h3>Executive summary</h3>",
        "<ol>",
        "<ul>",
        "<td class=\"num\">12%</td>",
        "<pre><code class=\"language-python\">",
        "<blockquote>",
        "<del>Obsolete claim</del>",
        "href=\"https://www.who.int/reports/2024?a=1&amp;b=2\"",
        "href=\"https://example.org/data.csv\"",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
}

#[test]
fn sources_list_every_cited_url_once() {
    let md = belt_report::markdown(&common::rich());
    let sources = &md[md.find("## Sources").expect("a sources section")..];
    let sources = &sources[..sources.find("## Appendix").unwrap()];
    for url in [
        "https://www.who.int/reports/2024?a=1&b=2",
        "https://example.org/data.csv",
        "https://example.org/costs",
    ] {
        assert_eq!(sources.matches(url).count(), 1, "{url} in {sources}");
    }
    assert!(!sources.contains("javascript:") && !sources.contains("data:"));
    assert!(sources.contains("the WHO report"), "a link's text names its source");
}

#[test]
fn large_runs_chart_buckets_and_every_format_renders() {
    let r = common::cascade(1000);
    let svg = belt_report::chart_svg(&r);
    assert!(svg.contains("each bar: the largest of up to"), "bars are bucketed past 320");
    assert!(svg.len() < 120_000, "the chart stays small: {} bytes", svg.len());
    for f in [Format::Markdown, Format::Html, Format::Docx] {
        assert!(!render(&r, f).is_empty());
    }
}

/// A format's text as a person reads it.
fn text_of(r: &belt_core::RunResult, format: Format) -> String {
    match format {
        Format::Markdown | Format::Html => String::from_utf8(render(r, format)).unwrap(),
        Format::Docx => parse_xml(&unzip(&render(r, format))["word/document.xml"]).text,
        #[cfg(feature = "pdf")]
        Format::Pdf => normalize(&pdftotext(&render(r, format))),
        #[cfg(not(feature = "pdf"))]
        Format::Pdf => String::new(),
    }
}

#[test]
fn every_format_says_unknown_for_unpriced_costs_and_marks_truncated_steps() {
    let r = common::local();
    let mut formats = vec![Format::Markdown, Format::Html, Format::Docx];
    if cfg!(feature = "pdf") {
        formats.push(Format::Pdf);
    }
    for f in formats {
        let text = text_of(&r, f);
        // The run's total is a lower bound; the workers' row (one unpriced) too; the
        // executive's row and step (all unpriced) are unknown.
        for want in [
            "≥ $0.0127 (2 calls unpriced)",
            "≥ $0.0043 (1 call unpriced)",
            "unknown",
            "2 steps stopped at their token cap, output cut off: worker/002, executive",
            "truncated: stopped at its token cap",
            "cost unknown",
        ] {
            assert!(text.contains(want), "{f}: missing {want:?}");
        }
        // The unpriced worker's cost is not shown as a price of zero.
        assert!(!text.contains("$0.0000"), "{f}: an unknown cost reads as $0.0000");
    }
    let svg = belt_report::chart_svg(&r);
    assert!(svg.contains("cost unknown for 2 agents"), "the chart says which bars are not $0");
}

#[test]
fn a_priced_run_says_nothing_of_unknown_costs_or_truncation() {
    let md = belt_report::markdown(&common::rich());
    for absent in ["unknown", "unpriced", "truncated", "Truncated"] {
        assert!(!md.contains(absent), "{absent:?} in a fully priced, untruncated run");
    }
}

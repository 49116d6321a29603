//! End-to-end tests of reports: `belt run --format …` writes every chosen document (named
//! by a slug of the task plus the run id, inside `--out`), and `belt report` renders a
//! stored run again. Drives the real binary against a SQLite store in a temp dir.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-reports-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run belt to the end (at most 120 s: a debug build renders PDFs slowly).
fn belt(dir: &Dir, args: &[&str]) -> Output {
    let mut child = common::belt_command(&dir.0, &dir.join("home"), args).spawn().expect("spawn belt");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("belt did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn run_with_format_all_writes_four_documents_and_report_renders_them_again() {
    let dir = Dir::new("all");
    let task = "Analyze the impact of AI on healthcare";
    let o = belt(
        &dir,
        &[
            "run",
            task,
            "--agents",
            "12",
            "--format",
            "all",
            "--out",
            "out",
            "--sim-latency-ms",
            "5",
            "--quiet",
            "--json",
            "--events",
            "events.jsonl",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let result: Value = serde_json::from_slice(&o.stdout).expect("the RunResult");
    let id = result["run_id"].as_str().unwrap().to_string();
    let docs = result["documents"].as_array().expect("documents");
    let formats: Vec<&str> = docs.iter().map(|d| d["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["markdown", "html", "pdf", "docx"]);

    let slug = format!("analyze-the-impact-of-ai-on-healthcare-{id}");
    let expected: Vec<String> = ["docx", "html", "md", "pdf"].iter().map(|e| format!("{slug}.{e}")).collect();
    assert_eq!(files(&dir.join("out")), expected, "only the four documents, no temporary files");
    for d in docs {
        let path = PathBuf::from(d["path"].as_str().unwrap());
        assert!(dir.join("out").join(path.file_name().unwrap()).exists(), "{path:?}");
    }
    let read = |ext: &str| std::fs::read(dir.join("out").join(format!("{slug}.{ext}"))).unwrap();
    assert!(read("pdf").starts_with(b"%PDF-"));
    assert!(read("docx").starts_with(b"PK\x03\x04"), "a DOCX is a zip");
    let html = String::from_utf8(read("html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Final synthesis") && !html.contains("<script"));
    let md = String::from_utf8(read("md")).unwrap();
    assert!(md.starts_with("# Analyze the impact of AI on healthcare"));

    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let written = events.lines().filter(|l| l.contains("\"type\":\"document_written\"")).count();
    assert_eq!(written, 4, "one document_written event per document");

    // `belt report` renders the stored run again: the same Markdown, and other formats.
    let o = belt(&dir, &["report", &id, "--format", "md,html", "--out", "again"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(files(&dir.join("again")), [format!("{slug}.html"), format!("{slug}.md")]);
    let printed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(printed.lines().count(), 2, "one path per document: {printed}");
    assert_eq!(std::fs::read_to_string(dir.join("again").join(format!("{slug}.md"))).unwrap(), md);
}

#[test]
fn default_is_markdown_and_names_never_leave_out() {
    let dir = Dir::new("names");
    let o = belt(
        &dir,
        &[
            "run",
            "../../../etc/x <b>hi</b>",
            "--agents",
            "2",
            "--sim-latency-ms",
            "1",
            "--quiet",
            "--out",
            "out",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let names = files(&dir.join("out"));
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("etc-x-b-hi-b-") && names[0].ends_with(".md"), "{names:?}");
    assert_eq!(files(&dir.0).iter().filter(|n| n.as_str() != "out" && n.as_str() != "home").count(), 0);
}

#[test]
fn bad_formats_and_unknown_runs_are_usage_errors() {
    let dir = Dir::new("errors");
    let o = belt(&dir, &["run", "task", "--format", "md,odt", "--quiet"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown format"), "{}", stderr(&o));
    assert!(files(&dir.0).iter().all(|n| n != "belt-out"), "nothing was run");

    let o = belt(&dir, &["report", "no-such-run", "--format", "html"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no run `no-such-run`"), "{}", stderr(&o));
}

/// A DOCX report read with python-docx, as a user's script reads it: every paragraph has a
/// style (the body text's is Normal, the default style), the outline uses Word's Heading
/// styles without skipping a level or repeating a subtask's title, and the tables are there.
/// Found by a user: python-docx raised on `paragraph.style` for most paragraphs.
#[test]
fn docx_reads_in_python_docx_with_styles_headings_and_tables() {
    let deps = common::test_deps();
    let dir = Dir::new("python-docx");
    let o = belt(
        &dir,
        &["run", "Compare three bicycle designs", "--agents", "12", "--format", "docx,md", "--out", "out"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let docx = files(&dir.join("out")).into_iter().find(|n| n.ends_with(".docx")).expect("a DOCX");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/docx_styles.py");
    let read = std::process::Command::new(&deps.python)
        .arg(script)
        .arg(dir.join("out").join(&docx))
        .output()
        .expect("run python-docx");
    assert!(read.status.success(), "python-docx: {}", String::from_utf8_lossy(&read.stderr));
    let doc: Value = serde_json::from_slice(&read.stdout).unwrap();
    let paragraphs = doc["paragraphs"].as_array().unwrap();
    let style = |p: &Value| p["style"].as_str().unwrap().to_string();
    let styles: Vec<String> = paragraphs.iter().map(style).collect();
    let broken: Vec<&String> = styles.iter().filter(|s| s.starts_with("ERROR")).collect();
    assert!(broken.is_empty(), "{} of {} paragraphs: {:?}", broken.len(), styles.len(), broken.first());
    for s in ["Title", "Normal", "Heading 1", "Heading 2", "Heading 3", "List Paragraph"] {
        assert!(styles.iter().any(|x| x == s), "no paragraph in style {s}: {styles:?}");
    }
    let heading = |p: &Value| style(p).strip_prefix("Heading ").and_then(|n| n.parse::<usize>().ok());
    let text = |p: &Value| p["text"].as_str().unwrap().to_string();
    let mut previous = 0;
    for p in paragraphs {
        let Some(level) = heading(p) else { continue };
        assert!(level <= previous + 1, "`{}` is Heading {level} after Heading {previous}", text(p));
        previous = level;
    }
    for s in ["Final synthesis", "Worker findings", "Time and cost"] {
        let p = paragraphs.iter().find(|p| text(p) == s).unwrap_or_else(|| panic!("no `{s}`"));
        assert_eq!(style(p), "Heading 1", "{s}");
    }
    // A worker's section starts with its subtask, once.
    let worker = paragraphs.iter().position(|p| text(p).starts_with("1. ")).expect("worker 1");
    let title = text(&paragraphs[worker])["1. ".len()..].to_string();
    assert_eq!(heading(&paragraphs[worker]), Some(2));
    let again =
        paragraphs[worker + 1..].iter().take_while(|p| heading(p) != Some(2)).any(|p| text(p) == title);
    assert!(!again, "the subtask `{title}` is repeated under its own heading");
    let tables = doc["tables"].as_array().unwrap();
    assert!(tables.len() >= 3, "summary, tiers and plan tables: {tables:?}");
    assert!(
        tables.iter().any(|t| t["rows"] == 13),
        "the plan has a row per subtask and a header: {tables:?}"
    );

    // The Markdown of the same run nests the same way: no level left out under a heading.
    let md = files(&dir.join("out")).into_iter().find(|n| n.ends_with(".md")).unwrap();
    let md = std::fs::read_to_string(dir.join("out").join(md)).unwrap();
    let mut previous = 0;
    for line in md.lines().filter(|l| l.starts_with('#')) {
        let level = line.chars().take_while(|&c| c == '#').count();
        assert!(level <= previous + 1, "`{line}` after a level-{previous} heading");
        previous = level;
    }
    assert!(!md.contains(&format!("#### {title}")), "the subtask repeated in the Markdown");
}

/// `belt runs show`, from another directory than the run's, prints the report's path in full
/// (a path relative to where the run was started would point nowhere from here).
#[test]
fn runs_show_prints_the_report_path_in_full() {
    let dir = Dir::new("abs-path");
    std::fs::create_dir_all(dir.join("project")).unwrap();
    let home = dir.join("home");
    let run = common::belt_command(&dir.join("project"), &home, &["run", "Plan a park", "--agents", "2"])
        .args(["--sim-latency-ms", "0", "--quiet", "--out", "out"])
        .output()
        .unwrap();
    assert_eq!(code(&run), 0, "{}", stderr(&run));
    let list = common::belt_command(&dir.0, &home, &["runs", "list", "--json"]).output().unwrap();
    let runs: Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap();
    let show = belt(&dir, &["runs", "show", &id[..13]]);
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    let text = String::from_utf8_lossy(&show.stdout);
    let path = text.lines().find_map(|l| l.strip_prefix("report:")).expect("a report line").trim();
    assert!(PathBuf::from(path).is_absolute(), "{path}");
    assert!(PathBuf::from(path).starts_with(dir.join("project").join("out")), "{path}");
    assert!(std::fs::metadata(path).is_ok_and(|m| m.is_file()), "{path}");
}

//! How long each format takes to render, and the peak memory of doing it, for cascades
//! of 12, 100 and 1000 workers with the simulated provider's texts (about 4 KB of Markdown
//! per step).
//!
//! ```text
//! cargo bench -p belt-report --bench render             # 12, 100 and 1000 workers
//! cargo bench -p belt-report --bench render -- 100 5000 # chosen sizes
//! ```
//!
//! Every (size, format) is measured in a fresh child process, so its peak resident memory
//! (`ru_maxrss`) is that of one render. Times are the best of 3 runs (1 for 1000 workers
//! and more), after a first run that warms the font and library caches.

use std::process::Command;
use std::time::Instant;

use belt_core::{Cascade, RunOptions, RunResult, Task};
use belt_llm::SimConfig;
use belt_report::Format;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--one") {
        let n: usize = args[1].parse().expect("a number of workers");
        let format: Format = args[2].parse().expect("a format");
        one(n, format);
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![12, 100, 1000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    println!(
        "{:>7} {:>6} {:>10} {:>12} {:>10} {:>12}",
        "workers", "format", "time", "size", "pages", "peak RSS"
    );
    let exe = std::env::current_exe().expect("the bench's own path");
    for n in sizes {
        for format in Format::ALL.into_iter().filter(|f| f.available()) {
            let out = Command::new(&exe)
                .args(["--one", &n.to_string(), format.extension()])
                .output()
                .expect("run the bench");
            if !out.status.success() {
                eprintln!("{n} {format}: {}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn one(n: usize, format: Format) {
    let result = run(n);
    let baseline = max_rss_kib();
    let repeats = if n >= 1000 { 1 } else { 3 };
    let mut best = f64::MAX;
    let mut bytes = Vec::new();
    // A first render warms the process-wide caches (fonts, typst's standard library).
    belt_report::render(&result, format, &mut Vec::new()).expect("render");
    for _ in 0..repeats {
        bytes.clear();
        let start = Instant::now();
        belt_report::render(&result, format, &mut bytes).expect("render");
        best = best.min(start.elapsed().as_secs_f64());
    }
    let pages = if format == Format::Pdf {
        match count_pages(&bytes) {
            0 => "?".to_string(),
            n => n.to_string(),
        }
    } else {
        "-".to_string()
    };
    println!(
        "{n:>7} {:>6} {:>8.3} s {:>10.1} KB {:>10} {:>9.0} MiB (results {:.0} MiB)",
        format.extension(),
        best,
        bytes.len() as f64 / 1024.0,
        pages,
        max_rss_kib() as f64 / 1024.0,
        baseline as f64 / 1024.0
    );
}

/// Pages of a PDF: the `/Count` of its page tree root (the largest one).
fn count_pages(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    text.match_indices("/Count ")
        .filter_map(|(i, m)| text[i + m.len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// A finished cascade of `n` workers on the simulated provider, with made-up but varied
/// durations (the provider answers at once here) so the chart has something to draw.
fn run(n: usize) -> RunResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let mut result = runtime.block_on(async {
        let options = RunOptions::default()
            .concurrency(256)
            .with_providers(belt_llm::providers(SimConfig::default().latency_ms(0)));
        let handle = belt_core::run(
            Cascade::new(n, "simulated/default"),
            Task::new("Analyze the impact of AI on healthcare"),
            options,
        )
        .await
        .expect("a valid run");
        handle.result().await
    });
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for a in &mut result.agents {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        a.outcome.duration_ms = 200 + seed % 900;
        a.started_ms = seed % 5000;
    }
    result
}

fn max_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 { usage.ru_maxrss } else { 0 }
}

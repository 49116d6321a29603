//! End-to-end tests of logging through the real binary: `-v` shows info lines, `-q` only
//! errors, `RUST_LOG` wins over both, `--log-format json` writes one JSON object a line.
//! The log line used is the exporter's (an OTLP endpoint nobody listens on): an info line
//! when export starts, one warning when the collector does not answer.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Dir, code, command, stderr, wait};

const INFO: &str = "exporting runs as OpenTelemetry traces";
const WARNING: &str = "cannot send spans";

fn run(dir: &Dir, flags: &[&str], env: &[(&str, &str)]) -> String {
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let mut args = vec!["run", "Plan a city park", "--agents", "3", "--otlp-endpoint", &dead];
    args.extend(flags);
    let mut cmd = command(dir, &args, None);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stderr(&out)
}

#[test]
fn verbosity_flags_and_rust_log_choose_the_lines() {
    let dir = Dir::new("logs-levels");
    let plain = run(&dir, &[], &[]);
    assert!(plain.contains(&format!("belt: warning: OpenTelemetry export: {WARNING}")), "{plain}");
    assert!(!plain.contains(INFO), "{plain}");
    let verbose = run(&dir, &["-v"], &[]);
    assert!(verbose.contains(&format!("belt: info: {INFO}")), "{verbose}");
    let quiet = run(&dir, &["-q"], &[]);
    assert!(!quiet.contains(WARNING) && !quiet.contains(INFO), "{quiet}");
    let env = run(&dir, &["-v"], &[("RUST_LOG", "belt_otel=off,belt=info")]);
    assert!(env.contains(INFO) && !env.contains(WARNING), "RUST_LOG wins: {env}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = Dir::new("logs-json");
    let err = run(&dir, &["-v", "--log-format", "json"], &[]);
    let logs: Vec<serde_json::Value> =
        err.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let info = logs.iter().find(|l| l["message"].as_str().unwrap().contains(INFO)).unwrap();
    assert_eq!(info["level"], "info");
    assert_eq!(info["target"], "belt::otel");
    assert!(info["ts"].as_str().unwrap().contains('T'));
    let warning = logs.iter().find(|l| l["message"].as_str().unwrap().contains(WARNING)).unwrap();
    assert_eq!(warning["level"], "warning");
    assert_eq!(warning["target"], "belt_otel::export");
    assert!(!err.contains("belt: warning:"), "no text lines for logs: {err}");
}

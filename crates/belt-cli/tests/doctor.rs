//! `belt doctor` end to end: a fresh machine (nothing set up, nothing failed), one with a
//! key, a store, a local Ollama and a token file that others can read, and one with a broken
//! belt.toml and a damaged store (failed, exit 1). Keys' values are never printed.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::process::Output;

use common::Dir;

/// `belt doctor` in `dir` with extra environment `env`; its output.
fn doctor(dir: &Dir, env: &[(&str, &str)]) -> Output {
    let mut cmd = common::command(dir, &["doctor"], None);
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::wait(cmd.spawn().unwrap(), std::time::Duration::from_secs(60))
}

/// The line of check `what`, and every line is `ok`, `warn` or `fail` but the last.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    let lines: Vec<&str> = stdout.lines().collect();
    for l in &lines[..lines.len() - 1] {
        assert!(["ok  ", "warn", "fail"].iter().any(|p| l.starts_with(p)), "{l}");
    }
    lines
        .iter()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{what} "))))
        .unwrap_or_else(|| panic!("no {what} line in:\n{stdout}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn on_a_fresh_machine_nothing_fails_and_the_next_steps_are_said() {
    let dir = Dir::new("doctor-fresh");
    let o = doctor(&dir, &[]);
    let out = stdout(&o);
    assert_eq!(common::code(&o), 0, "{out}{}", common::stderr(&o));
    assert!(line(&out, "config").starts_with("ok"), "{out}");
    assert!(line(&out, "config").contains("no belt.toml"), "{out}");
    assert!(line(&out, "providers").contains("simulated"), "{out}");
    let keys = line(&out, "keys");
    assert!(keys.starts_with("warn") && keys.contains("export OPENAI_API_KEY"), "{keys}");
    let local = line(&out, "local");
    assert!(
        local.starts_with("warn")
            && local.contains("no local model server answers")
            && local.contains("ollama at http://127.0.0.1:9/v1 (OLLAMA_HOST moves it)"),
        "{local}"
    );
    let store = line(&out, "store");
    assert!(store.starts_with("ok") && store.contains("not created yet"), "{store}");
    assert!(!dir.join("home/belt.db").exists(), "doctor does not create the store");
    assert!(line(&out, "api token").contains("none yet"), "{out}");
    assert!(out.trim_end().ends_with("checks: 0 failed, 2 to look at"), "{out}");
}

/// Something that answers `GET /v1/models` as Ollama does, once per connection.
fn fake_ollama() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let body = if buf[..n].starts_with(b"GET /v1/models ") {
                r#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model","owned_by":"library"}]}"#
            } else {
                "{}"
            };
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    addr
}

#[test]
fn keys_are_named_never_shown_and_the_store_ollama_and_token_are_checked() {
    let dir = Dir::new("doctor-ready");
    // A store with a run in it.
    let run = common::belt(
        &dir,
        &["run", "Name three rivers", "--agents", "2", "--quiet", "--sim-latency-ms", "0"],
        None,
    );
    assert_eq!(common::code(&run), 0, "{}", common::stderr(&run));
    let token = dir.join("home/api-token");
    std::fs::write(&token, "a-token\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let ollama = fake_ollama();
    let secret = "sk-doctor-secret-7f3a";
    let o = doctor(&dir, &[("OPENAI_API_KEY", secret), ("OLLAMA_HOST", &ollama)]);
    let out = stdout(&o);
    assert_eq!(common::code(&o), 0, "{out}");
    assert!(!out.contains(secret) && !common::stderr(&o).contains(secret), "a key's value printed:\n{out}");
    let keys = line(&out, "keys");
    assert!(keys.starts_with("ok") && keys.contains("set: OPENAI_API_KEY;"), "{keys}");
    assert!(line(&out, "providers").contains("openai"), "{out}");
    let ollama_line = line(&out, "ollama");
    assert!(
        ollama_line.starts_with("ok")
            && ollama_line.contains(&format!("answers at http://{ollama}/v1 (OLLAMA_HOST moves it)"))
            && ollama_line.contains("1 model: llama3.2:latest; run with --model ollama/llama3.2:latest"),
        "{ollama_line}"
    );
    let store = line(&out, "store");
    assert!(store.starts_with("ok") && store.contains("belt.db opens (") && store.contains("KiB"), "{store}");
    let token_line = line(&out, "api token");
    assert!(token_line.starts_with("warn") && token_line.contains("chmod 600"), "{token_line}");
}

#[test]
fn a_broken_config_and_a_damaged_store_fail_with_what_to_do() {
    let dir = Dir::new("doctor-broken");
    std::fs::write(dir.join("belt.toml"), "[providers.openai\nrpm = 5\n").unwrap();
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::write(dir.join("home/belt.db"), vec![0x5a; 8192]).unwrap();
    let o = doctor(&dir, &[]);
    let out = stdout(&o);
    assert_eq!(common::code(&o), 1, "{out}");
    let config = line(&out, "config");
    assert!(config.starts_with("fail") && config.contains("belt.toml is not valid"), "{config}");
    assert!(line(&out, "providers").starts_with("fail"), "{out}");
    let store = line(&out, "store");
    assert!(
        store.starts_with("fail") && store.contains("does not open") && store.contains("move the file aside"),
        "{store}"
    );
    assert!(out.trim_end().ends_with("failed, 2 to look at") && out.contains("checks: 3 failed"), "{out}");
}

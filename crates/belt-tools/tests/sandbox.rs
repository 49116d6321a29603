//! `run_code` against real bubblewrap: programs that work, and escape attempts, each
//! refused or contained in the specific way the sandbox promises.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod sandbox_common;

use std::io::Read;
use std::time::Duration;

use belt_tools::sandbox::{Language, SandboxLimits, run_code_tool};
use sandbox_common::sandbox;

#[tokio::test]
async fn python_and_sh_programs_run_with_their_stdin() {
    let sandbox = sandbox().await;
    let py = sandbox
        .run(Language::Python, "import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3")
        .await
        .unwrap();
    assert!(py.success(), "{py:?}");
    assert_eq!(py.stdout, "6\n");
    let sh = sandbox.run(Language::Sh, "echo \"$(pwd) $HOME\"; echo oops >&2; exit 3", "").await.unwrap();
    assert_eq!((sh.exit_code, sh.stdout.as_str(), sh.stderr.as_str()), (Some(3), "/work /work\n", "oops\n"));
}

#[tokio::test]
async fn a_syntax_error_is_reported_with_its_line() {
    let sandbox = sandbox().await;
    let report = sandbox.run(Language::Python, "x = 1\ndef f(:\n  pass", "").await.unwrap();
    assert_eq!(report.exit_code, Some(1));
    assert!(report.stderr.contains("SyntaxError") && report.stderr.contains("line 2"), "{}", report.stderr);
    assert!(report.render().contains("status: exit code 1\n"));
}

#[tokio::test]
async fn the_tool_reports_status_time_and_both_streams() {
    let tool = run_code_tool(Ok(sandbox().await));
    assert!(tool.policy().idempotent);
    let out = tool
        .call(serde_json::json!({"language": "python", "code": "print('hi')", "stdin": null}))
        .await
        .unwrap();
    assert!(out.content.starts_with("status: exit code 0 (success)\ntime: "), "{}", out.content);
    assert!(out.content.ends_with("--- stdout ---\nhi\n--- stderr ---\n(empty)\n"), "{}", out.content);
    let bad =
        tool.call(serde_json::json!({"language": "ruby", "code": "1", "stdin": null})).await.unwrap_err();
    assert!(bad.message.contains("unknown variant"), "{}", bad.message);
}

#[tokio::test]
async fn no_network_not_even_the_hosts_loopback() {
    let sandbox = sandbox().await;
    // A server on the host's loopback: a connection from the sandbox would reach it if the
    // network were shared.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\nfor host, port in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('example.com', 80)]:\n    \
         try:\n        socket.create_connection((host, port), timeout=2)\n        print(host, 'CONNECTED')\n    \
         except OSError as e:\n        print(host, 'refused:', e)"
    );
    let report = sandbox.run(Language::Python, &code, "").await.unwrap();
    assert!(report.success(), "{report:?}");
    assert!(!report.stdout.contains("CONNECTED"), "{}", report.stdout);
    assert!(report.stdout.contains("127.0.0.1 refused: [Errno 111]"), "{}", report.stdout);
    assert!(
        report.stdout.contains("1.1.1.1 refused: [Errno 101] Network is unreachable"),
        "{}",
        report.stdout
    );
    assert!(report.stdout.contains("example.com refused:"), "{}", report.stdout);
    assert!(listener.accept().is_err(), "the host's listener got a connection from the sandbox");
}

#[tokio::test]
async fn writes_outside_the_scratch_directory_fail() {
    let sandbox = sandbox().await;
    let host_dir = std::env::temp_dir().join(format!("belt-sbx-write-{}", std::process::id()));
    std::fs::create_dir_all(&host_dir).unwrap();
    let targets = [
        "/usr/evil",
        "/etc/evil",
        "/evil",
        "/proc/sys/kernel/hostname",
        &format!("{}/evil", host_dir.display()),
    ];
    let code = format!(
        "for p in {targets:?}:\n    try:\n        open(p, 'w').write('x')\n        print(p, 'WRITTEN')\n    \
         except OSError as e:\n        print(p, 'failed', e.errno)\nopen('/work/ok', 'w').write('x')\nopen('/tmp/ok2', 'w').write('x')\nprint('scratch ok')"
    );
    let report = sandbox.run(Language::Python, &code, "").await.unwrap();
    assert!(report.success(), "{report:?}");
    assert!(!report.stdout.contains("WRITTEN") && report.stdout.contains("scratch ok"), "{}", report.stdout);
    assert_eq!(report.stdout.matches("failed").count(), targets.len(), "{}", report.stdout);
    assert!(!host_dir.join("evil").exists());
    std::fs::remove_dir_all(&host_dir).unwrap();
}

#[tokio::test]
async fn a_fork_bomb_is_capped_and_leaves_no_process_behind() {
    let sandbox = sandbox().await;
    // Counting: forks stop at the process limit (32 here) with EAGAIN.
    let count = "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)";
    let report = sandbox.run(Language::Python, count, "").await.unwrap();
    let (forked, errno) = report.stdout.trim().split_once(' ').unwrap();
    let forked: u32 = forked.parse().unwrap();
    assert_eq!(errno, "11", "{report:?}");
    assert!((20..32).contains(&forked), "{forked} forks");
    // The classic bomb, kept going until the wall clock kills the sandbox, marked so its
    // processes can be looked for on the host afterwards.
    let limits = SandboxLimits { wall: Duration::from_secs(3), ..sandbox.limits().clone() };
    let sandbox = sandbox.with_limits(limits);
    let marker = format!("belt-bomb-{}", std::process::id());
    let bomb = format!("# {marker}\nb() {{ b | b & }}; b; sleep 60");
    let report = sandbox.run(Language::Sh, &bomb, "").await.unwrap();
    assert!(report.timed_out, "{report:?}");
    // The kernel tears the PID namespace down after bwrap is killed, not before `kill`
    // returns: give it a moment (a survivor would still be there after it).
    let mut left = processes_with(&marker);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = processes_with(&marker);
    }
    assert!(left.is_empty(), "processes of the fork bomb survived the sandbox: {left:?}");
}

#[tokio::test]
async fn a_memory_bomb_gets_memory_error() {
    let sandbox = sandbox().await;
    let code = "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(16 << 20))\nexcept MemoryError:\n    print('stopped at', len(chunks) * 16, 'MiB')";
    let report = sandbox.run(Language::Python, code, "").await.unwrap();
    assert!(report.success(), "{report:?}");
    let mib: u64 = report.stdout.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(mib < 256, "{mib} MiB allocated under a 256 MiB limit");
}

#[tokio::test]
async fn an_endless_loop_is_killed_by_the_cpu_limit_and_a_sleeper_by_the_wall_clock() {
    let sandbox = sandbox().await;
    let cpu = SandboxLimits { cpu: Duration::from_secs(1), ..sandbox.limits().clone() };
    let spin =
        sandbox.clone().with_limits(cpu).run(Language::Python, "while True:\n    pass", "").await.unwrap();
    assert!(!spin.timed_out && spin.exit_code == Some(137), "{spin:?}");
    assert!(spin.render().contains("killed by signal 9 (SIGKILL: the CPU-time limit"), "{}", spin.render());
    let wall = SandboxLimits { wall: Duration::from_secs(2), ..sandbox.limits().clone() };
    let sleeper = sandbox.with_limits(wall).run(Language::Sh, "echo started; sleep 100", "").await.unwrap();
    assert!(sleeper.timed_out, "{sleeper:?}");
    assert!(
        sleeper.elapsed >= Duration::from_secs(2) && sleeper.elapsed < Duration::from_secs(8),
        "{sleeper:?}"
    );
    assert_eq!(sleeper.stdout, "started\n", "output before the kill is kept");
    assert!(sleeper.render().starts_with("status: killed: the wall-clock limit was reached"));
}

#[tokio::test]
async fn a_hundred_megabytes_of_output_are_cut_and_finish_quickly() {
    let sandbox = sandbox().await;
    let code = "import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stderr.write('e' * 10_000)";
    let report = sandbox.run(Language::Python, code, "").await.unwrap();
    assert!(report.success(), "{:?}", report.exit_code);
    assert_eq!((report.stdout.len(), report.stdout_bytes), (4096, 100_000_000));
    assert_eq!((report.stderr.len(), report.stderr_bytes), (4096, 10_000));
    assert!(report.render().contains("[output cut at 4096 bytes; 100000000 bytes in all]"));
    assert!(report.elapsed < Duration::from_secs(15), "{:?}", report.elapsed);
}

#[tokio::test]
async fn a_file_past_the_size_limit_or_the_scratch_size_fails() {
    let sandbox = sandbox().await;
    let code = "import errno\nfor size in (2 << 20,):\n    try:\n        open('/work/big', 'wb').write(b'x' * size)\n    except OSError as e:\n        print('big', errno.errorcode[e.errno])\nn = 0\ntry:\n    while True:\n        open(f'/work/f{n}', 'wb').write(b'x' * (512 << 10))\n        n += 1\nexcept OSError as e:\n    print('many', errno.errorcode[e.errno], n)";
    let report = sandbox.run(Language::Python, code, "").await.unwrap();
    assert!(report.stdout.starts_with("big EFBIG\nmany ENOSPC "), "{report:?}");
}

/// Processes on the host whose command line contains `marker`: their pids and states.
fn processes_with(marker: &str) -> Vec<String> {
    let read = |path: std::path::PathBuf| {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map(|_| text)
            .unwrap_or_default()
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| read(e.path().join("cmdline")).contains(marker))
        .map(|e| {
            let status = read(e.path().join("status"));
            let state = status.lines().find(|l| l.starts_with("State:")).unwrap_or("").to_string();
            format!("{} {state}", e.file_name().to_string_lossy())
        })
        .collect()
}

//! End-to-end tests of a damaged store (issue 18, defect 8): a `belt.db` with stray writes in
//! it gives every command a message naming the run and what to do, exit code 1, never a
//! panic (exit code 101). Drives the real binary; the damage is written with SQL (rusqlite,
//! the SQLite belt itself links) or as raw bytes into a copy of a real database.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-damaged-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(d.join("home")).unwrap();
        Dir(d)
    }
    fn db(&self) -> PathBuf {
        self.0.join("home").join("belt.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `belt ARGS` with its runs in `dir`, to the end (at most 60 s).
fn belt(dir: &Dir, args: &[&str]) -> Output {
    let mut child = common::belt_command(&dir.0, &dir.0.join("home"), args).spawn().expect("spawn belt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("belt {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A completed run on the simulated provider in `dir`, its database checkpointed so that
/// the file alone holds it; returns the run id.
fn completed_run(dir: &Dir) -> String {
    let o = belt(
        dir,
        &["run", "Plan a park", "--agents", "3", "--sim-latency-ms", "0", "--quiet", "--json", "--out", "o"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    result["run_id"].as_str().unwrap().to_string()
}

/// A copy of the database of `from` in a new directory (the file alone: it was checkpointed).
fn copy_of(from: &Dir, name: &str) -> Dir {
    let dir = Dir::new(name);
    std::fs::copy(from.db(), dir.db()).unwrap();
    dir
}

fn sql(dir: &Dir, statements: &str) {
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    conn.execute_batch(statements).unwrap();
}

const NOT_UTF8: &str = "CAST(x'ff' AS TEXT)";

/// Each damage, written with SQL into a copy of a finished run's database, and the commands
/// that read what it damaged: each exits 1 with a message naming the run, the column and
/// what to do. Before the fix `belt runs events ID` exited 101 (`ColumnDecode … Utf8Error`).
#[test]
fn commands_on_a_damaged_run_exit_1_naming_the_run_and_what_to_do() {
    let pristine = Dir::new("pristine");
    let id = completed_run(&pristine);
    let show = ["runs", "show", id.as_str()];
    let events = ["runs", "events", id.as_str()];
    let list = ["runs", "list"];
    let resume = ["resume", id.as_str(), "--quiet"];
    let report = ["report", id.as_str(), "--out", "r"];
    let cases: Vec<(String, &str, Vec<&[&str]>)> = vec![
        (
            format!("UPDATE runs SET task = {NOT_UTF8}"),
            "column `task`",
            // (`belt report` renders the finished run's result, which holds its own task.)
            vec![&show, &events, &list, &resume],
        ),
        (format!("UPDATE events SET lines = {NOT_UTF8}"), "column `lines`", vec![&events]),
        ("UPDATE events SET lines = '[1,'".into(), "an event does not decode", vec![&events]),
        ("UPDATE run_results SET result_lz4 = x'ffffffff00'".into(), "column `result_lz4`", vec![&show, &resume, &report]),
        ("UPDATE runs SET duration_ms = -1".into(), "-1 is negative", vec![&list]),
        ("UPDATE runs SET status = 'exploded'".into(), "not a run status", vec![&show, &list, &resume]),
        // An unfinished run: its steps are read to show it and to resume it.
        (
            format!(
                "UPDATE steps SET output = {NOT_UTF8} WHERE step = 'worker/002'; \
                 UPDATE runs SET status = 'running'; DELETE FROM run_results"
            ),
            "column `output` of step worker/002",
            vec![&show, &resume],
        ),
        (
            "UPDATE steps SET input_tokens = -3 WHERE step = 'worker/001'; UPDATE runs SET status = 'running'; DELETE FROM run_results".into(),
            "column `input_tokens` of step worker/001: -3 is negative",
            vec![&show, &resume],
        ),
    ];
    for (i, (damage, names, commands)) in cases.iter().enumerate() {
        let dir = copy_of(&pristine, &format!("case{i}"));
        sql(&dir, damage);
        for args in commands {
            let o = belt(&dir, args);
            let err = stderr(&o);
            assert_eq!(code(&o), 1, "{damage}: belt {args:?} exited {}: {err}", code(&o));
            assert!(!err.contains("panicked"), "{damage}: belt {args:?}: {err}");
            for needle in [
                format!("run {id}'s record in {} is damaged", dir.db().display()),
                names.to_string(),
                format!("`belt runs rm {id}`"),
            ] {
                assert!(err.contains(&needle), "{damage}: belt {args:?}: no `{needle}` in: {err}");
            }
        }
        // What the message says to do works, and the store is whole again.
        let o = belt(&dir, &["runs", "rm", &id]);
        assert_eq!(code(&o), 0, "{damage}: {}", stderr(&o));
        let o = belt(&dir, &["runs", "list", "--json"]);
        assert_eq!(code(&o), 0, "{damage}: {}", stderr(&o));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(), serde_json::json!([]));
    }
}

/// xorshift64*: the same damage on every machine for one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Garbage bytes written at random places of a real database (seeded, a bounded number of
/// writes per copy): whatever each command makes of it — a damaged record, a damaged file,
/// even success — it never panics. This is how defect 8 was found.
#[test]
fn random_bytes_in_the_database_never_make_a_command_panic() {
    let pristine = Dir::new("random-pristine");
    let id = completed_run(&pristine);
    let len = std::fs::metadata(pristine.db()).unwrap().len();
    let mut rng = Rng(0x5eed_0018_0008);
    let mut exits = std::collections::BTreeMap::<i32, u32>::new();
    let pristine_bytes = std::fs::read(pristine.db()).unwrap();
    // Where the file holds text (runs of printable ASCII: ids, tasks, outputs, JSON): most
    // of a small database is free space and b-tree structure, so half the writes land here.
    let text: Vec<usize> = (100..pristine_bytes.len())
        .filter(|&i| pristine_bytes[i - 4..=i].iter().all(|b| (0x20..0x7f).contains(b)))
        .collect();
    assert!(!text.is_empty());
    for copy in 0..24 {
        let dir = copy_of(&pristine, &format!("random{copy}"));
        let mut bytes = pristine_bytes.clone();
        for _ in 0..1 + rng.below(4) {
            // Past the 100-byte header, which SQLite checks before anything is read.
            let at = if rng.below(2) == 0 {
                text[rng.below(text.len() as u64) as usize]
            } else {
                100 + rng.below(len - 100) as usize
            };
            for b in bytes.iter_mut().skip(at).take(1 + rng.below(4) as usize) {
                *b = rng.next() as u8;
            }
        }
        std::fs::write(dir.db(), &bytes).unwrap();
        for args in [
            vec!["runs", "list"],
            vec!["runs", "show", &id],
            vec!["runs", "events", &id],
            vec!["report", &id, "--out", "r"],
            vec!["resume", &id, "--quiet"],
            vec!["runs", "rm", &id],
        ] {
            let o = belt(&dir, &args);
            let err = stderr(&o);
            assert_ne!(code(&o), 101, "copy {copy}: belt {args:?} panicked: {err}");
            assert!(!err.contains("panicked"), "copy {copy}: belt {args:?}: {err}");
            *exits.entry(code(&o)).or_default() += 1;
        }
    }
    // The damage reached records, not only unused pages: some command noticed it.
    assert!(exits.keys().any(|&c| c != 0), "no command failed on any damaged copy: {exits:?}");
}

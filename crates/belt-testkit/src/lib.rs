//! belt-testkit: what belt's property tests share. A dev-dependency only; nothing here is
//! part of belt.
//!
//! - [`check`] runs one property with a fixed, small number of cases (256 unless
//!   `BELT_PROPTEST_CASES` says more; see [`cases`]), bounded shrinking, no regression files, a seed that is
//!   printed on failure (`BELT_PROPTEST_SEED` replays it) and a watchdog: a case that runs
//!   longer than `BELT_PROPTEST_CASE_SECS` (30 s) fails the test with its input, so a hang in
//!   a parser is a red test naming the input, never a CI job that times out.
//! - [`mutate`] turns valid files (examples, configurations, JSON bodies) into the near-misses
//!   a user or a client really sends: flipped bytes, cut-off text, lines removed, doubled or
//!   swapped, stray keys and fragments.
//! - [`postgres`] gives the tests of the PostgreSQL run store a real server: the one
//!   `BELT_TEST_POSTGRES` names, else a throwaway one that `scripts/postgres start` runs
//!   (installing PostgreSQL if needed), so a plain `cargo test` runs them too.
//! - [`test_deps`] installs the pinned third-party programs of the end-to-end tests (the MCP
//!   reference server, the MCP Python SDK, …) with `scripts/test-deps`, once.
//!
//! ```
//! use belt_testkit::{check, mutate, proptest::prelude::*};
//!
//! check("lines never outnumber newlines + 1", 64, || mutate::text(vec!["a: 1\nb: 2\n".into()], &["c"]), |text| {
//!     prop_assert!(text.lines().count() <= text.matches('\n').count() + 1);
//!     Ok(())
//! });
//! ```

pub mod mutate;

use std::fmt::Debug;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use proptest;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// The cases of a property whose own count is `default`: `default`, or with
/// `BELT_PROPTEST_CASES=N`, `N` for a property of the usual 256 and as many in proportion for
/// the others (a property of 1 MiB inputs runs 16 where one of small inputs runs 256).
pub fn cases(default: u32) -> u32 {
    scaled(env_number("BELT_PROPTEST_CASES"), default)
}

fn scaled(asked: Option<u64>, default: u32) -> u32 {
    match asked {
        Some(n) => (n.saturating_mul(u64::from(default)) / 256).clamp(1, u64::from(u32::MAX)) as u32,
        None => default,
    }
}

/// The seed of this run's properties: `BELT_PROPTEST_SEED`, else a fresh one (printed on
/// failure, so a failure seen once in CI can be replayed).
pub fn seed() -> u64 {
    env_number("BELT_PROPTEST_SEED").unwrap_or_else(|| {
        // Not cryptographic, only different from run to run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// The URL of a PostgreSQL database for tests (`postgres://user:password@host:port/db`):
/// `BELT_TEST_POSTGRES` if set, else the one `scripts/postgres start` starts (or finds
/// already running: it is quick then, and safe to call from test binaries running at once).
/// Asked once per test binary. Tests share the database, so each makes a schema of its own.
///
/// Panics, failing the test, when no server can be had: these tests never skip themselves.
pub fn postgres() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| match std::env::var("BELT_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => start_postgres().unwrap_or_else(|why| panic!("no PostgreSQL for the tests: {why}")),
    })
    .clone()
}

/// Run `scripts/postgres start` of this workspace; its last line of output is the URL.
fn start_postgres() -> Result<String, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last().map(str::trim) {
        Some(url) if out.status.success() && url.starts_with("postgres") => Ok(url.to_string()),
        _ => Err(format!(
            "{} start failed ({}): {}{}; set BELT_TEST_POSTGRES to a database URL instead",
            script.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// The directory `scripts/test-deps` installs the end-to-end tests' third-party programs
/// into, `TARGET/test-deps` (`py/bin/python` with the MCP Python SDK, `npm/node_modules/…`
/// with the MCP Inspector and `@modelcontextprotocol/server-everything`), after running
/// the script (quick when its stamp says all is installed; once per test binary).
///
/// Panics, failing the test, when they cannot be installed: these tests never skip
/// themselves.
pub fn test_deps() -> std::path::PathBuf {
    static DEPS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DEPS.get_or_init(|| {
        use std::path::Path;
        // A test binary is TARGET/PROFILE/deps/NAME-HASH.
        let exe = std::env::current_exe().expect("the test binary's path");
        let target = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .and_then(Path::parent)
            .expect("the test binary sits in TARGET/PROFILE/deps");
        let deps = target.join("test-deps");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-deps");
        let status = std::process::Command::new(&script)
            .env("BELT_TEST_DEPS", &deps)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(status.success(), "{} failed: the tests need python3 with venv, and npm", script.display());
        deps
    })
    .clone()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The longest one case may run before the property counts as hung.
fn case_limit() -> Duration {
    Duration::from_secs(env_number("BELT_PROPTEST_CASE_SECS").unwrap_or(30).max(1))
}

/// The configuration of every property: `default_cases` cases, shrinking bounded in
/// iterations and time, and no failure persistence (CI writes nothing into the source tree;
/// a failure prints its minimal input and seed instead).
pub fn config(default_cases: u32, seed: u64) -> Config {
    Config {
        cases: cases(default_cases),
        max_shrink_iters: 2048,
        max_shrink_time: 10_000,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// Run the property `test` over `strategy()` (built on the property's own thread, so it
/// need not be `Send`). Panics — failing the calling test — with the minimal failing input
/// and the seed when the property fails, or with the input being tried when one case runs
/// longer than the case limit.
pub fn check<S, M, T>(name: &str, default_cases: u32, strategy: M, test: T)
where
    S: Strategy,
    S::Value: Debug,
    M: FnOnce() -> S + Send + 'static,
    T: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    check_within(name, default_cases, case_limit(), strategy, test);
}

fn check_within<S, M, T>(name: &str, default_cases: u32, limit: Duration, strategy: M, test: T)
where
    S: Strategy,
    S::Value: Debug,
    M: FnOnce() -> S + Send + 'static,
    T: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    let seed = seed();
    // The input being tried and when it started; the watchdog reads it.
    let current: Arc<Mutex<(Instant, String)>> = Arc::new(Mutex::new((Instant::now(), String::new())));
    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
    let watched = current.clone();
    let spawned = std::thread::Builder::new().name(format!("property {name}")).spawn(move || {
        let strategy = strategy();
        let mut runner = TestRunner::new(config(default_cases, seed));
        let outcome = runner.run(&strategy, |value| {
            if let Ok(mut c) = watched.lock() {
                *c = (Instant::now(), format!("{value:?}"));
            }
            test(value)
        });
        let outcome = outcome.map_err(|e| match e {
            TestError::Fail(why, value) => format!("{why}\nminimal failing input: {value:?}"),
            TestError::Abort(why) => format!("aborted: {why}"),
        });
        let _ = done_tx.send(outcome);
    });
    if let Err(e) = spawned {
        panic!("property {name}: cannot start its thread: {e}");
    }
    loop {
        match done_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(())) => return,
            Ok(Err(why)) => panic!("property `{name}` failed (replay: BELT_PROPTEST_SEED={seed}): {why}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("property `{name}` (seed {seed}): its thread ended without a verdict")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (started, input) = match current.lock() {
                    Ok(c) => (c.0, c.1.clone()),
                    Err(_) => continue,
                };
                if started.elapsed() > limit {
                    // The property's thread is left behind: a hung case cannot be stopped from
                    // outside, and the test binary ends when its tests do.
                    panic!(
                        "property `{name}` (seed {seed}): one case ran longer than {limit:?} — a hang? input: {}",
                        shorten(&input)
                    );
                }
            }
        }
    }
}

/// At most 4000 characters of a debug-printed input.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(4000) {
        Some((i, _)) => format!("{}… ({} bytes in all)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// A schema of its own in the test database ([`postgres`]), dropped with it: tests running
/// at once do not see one another's runs. Its [`PgSchema::url`] is a store URL that any
/// process can be given (`--store`), with the schema as its search path.
pub struct PgSchema {
    base: String,
    pub name: String,
}

impl PgSchema {
    pub async fn new() -> Self {
        use sqlx::Connection;
        let base = tokio::task::spawn_blocking(postgres).await.expect("the PostgreSQL lookup ran");
        let name = format!("t_{}_{}", std::process::id(), unique());
        let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test schema");
        let _ = conn.close().await;
        PgSchema { base, name }
    }

    /// The base URL with the schema as the search path, and `extra` parameters.
    pub fn url_with(&self, extra: &str) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}{extra}", self.base, self.name)
    }

    pub fn url(&self) -> String {
        self.url_with("")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop cannot await: a thread of its own, so it also works inside a runtime.
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}

/// A number no other call in this process returns, mixed with the time.
fn unique() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{nanos}_{n}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_failing_property_names_its_minimal_input_and_seed() {
        let outcome = std::panic::catch_unwind(|| {
            check(
                "below 100",
                256,
                || 0u32..1000,
                |n| {
                    prop_assert!(n < 100);
                    Ok(())
                },
            )
        });
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("minimal failing input: 100"), "{message}");
        assert!(message.contains("BELT_PROPTEST_SEED="), "{message}");
    }

    #[test]
    fn a_panic_in_a_property_is_a_failure_with_its_input() {
        let outcome = std::panic::catch_unwind(|| {
            check(
                "no panic",
                64,
                || Just(7u8),
                |n| {
                    let v: Vec<u8> = Vec::new();
                    prop_assert_eq!(v[usize::from(n)], 0);
                    Ok(())
                },
            )
        });
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("index out of bounds") && message.contains("input: 7"), "{message}");
    }

    #[test]
    fn a_case_that_never_returns_fails_the_property_with_its_input() {
        let outcome = std::panic::catch_unwind(|| {
            check_within(
                "hangs",
                8,
                Duration::from_millis(300),
                || Just(42u8),
                |_| {
                    // Blocks for good: the sender is never used.
                    let (_tx, rx) = mpsc::channel::<()>();
                    let _ = rx.recv();
                    Ok(())
                },
            )
        });
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("a hang?") && message.contains("input: 42"), "{message}");
    }

    #[test]
    fn more_cases_scale_every_property_in_proportion() {
        assert_eq!(scaled(None, 256), 256);
        assert_eq!(scaled(None, 16), 16);
        assert_eq!(scaled(Some(5000), 256), 5000);
        assert_eq!(scaled(Some(5000), 16), 312);
        assert_eq!(scaled(Some(1), 16), 1, "never none");
        assert_eq!(scaled(Some(u64::MAX), 256), u32::MAX);
    }

    #[test]
    fn a_postgres_server_is_there_for_the_tests() {
        let url = postgres();
        assert!(url.starts_with("postgres://") || url.starts_with("postgresql://"), "{url}");
        assert_eq!(postgres(), url, "asked once, the same URL after");
    }

    #[test]
    fn long_inputs_are_shortened_in_messages() {
        let long = "x".repeat(5000);
        let short = shorten(&long);
        assert!(short.len() < 4100 && short.ends_with("(5000 bytes in all)"), "{}", short.len());
        assert_eq!(shorten("abc"), "abc");
    }
}

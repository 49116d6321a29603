//! `belt doctor`: what this machine's belt will use, checked one line at a time — the
//! configuration file, providers and their keys, local model servers (llama.cpp, vLLM, LM
//! Studio, Ollama: which answer, with their models), the store, the API token —
//! each `ok`, `warn` or `fail` with what to do. It runs before the configuration is loaded
//! (a broken belt.toml is one of the things it reports, not a reason to stop), reads only
//! the names of keys (never a value), and never prints a store's password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use belt_app::config::Config;
use belt_llm::providers::BUILTIN_PROVIDERS;
use belt_store::StoreSpec;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
struct Check {
    level: Level,
    what: &'static str,
    detail: String,
}

fn ok(what: &'static str, detail: impl Into<String>) -> Check {
    Check { level: Level::Ok, what, detail: detail.into() }
}

fn warn(what: &'static str, detail: impl Into<String>) -> Check {
    Check { level: Level::Warn, what, detail: detail.into() }
}

fn fail(what: &'static str, detail: impl Into<String>) -> Check {
    Check { level: Level::Fail, what, detail: detail.into() }
}

/// `belt doctor`: print every check; exit 0 when none failed, 1 otherwise.
pub async fn doctor(explicit_config: Option<&Path>, home: &Path, store: &StoreSpec) -> i32 {
    let env = belt_llm::process_env;
    let (config_check, config) = config_file(explicit_config, home);
    let mut checks = vec![config_check];
    checks.push(providers(config.as_ref(), &env));
    checks.push(keys(config.as_ref(), &env));
    checks.extend(local_servers(&env).await);
    checks.push(store_check(store).await);
    checks.push(api_token(home, &env));
    for c in &checks {
        let level = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        println!("{level}  {:<9} {}", c.what, one_line(&c.detail));
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warned = checks.iter().filter(|c| c.level == Level::Warn).count();
    println!("{} checks: {failed} failed, {warned} to look at", checks.len());
    i32::from(failed > 0)
}

/// A message on one line: a parser's multi-line message (toml's quotes the line with a
/// caret under the column) keeps its words, not its picture.
fn one_line(detail: &str) -> String {
    let picture = |l: &str| {
        let l = l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        l.starts_with('|') || l.starts_with('^')
    };
    let parts: Vec<&str> =
        detail.lines().filter(|l| !l.trim().is_empty() && !picture(l)).map(str::trim).collect();
    parts.join(": ").replace(": ;", ";")
}

/// belt.toml: which file is in force, and whether it reads.
fn config_file(explicit: Option<&Path>, home: &Path) -> (Check, Option<Config>) {
    match belt_app::config::load(explicit, home) {
        Ok((config, Some(path))) => (ok("config", format!("{} is valid", path.display())), Some(config)),
        Ok((config, None)) => {
            let detail = format!(
                "no belt.toml (looked for ./belt.toml and {}); the defaults apply. `belt init` writes a \
                 starter workflow; see the README's belt.toml section for providers, limits and prices",
                home.join("belt.toml").display()
            );
            (ok("config", detail), Some(config))
        }
        Err(e) => (fail("config", format!("{e}; fix the file, or move it aside to use the defaults")), None),
    }
}

/// The providers a run here can call (as `belt run` builds them).
fn providers(config: Option<&Config>, env: &dyn Fn(&str) -> Option<String>) -> Check {
    let Some(config) = config else {
        return fail("providers", "not known: belt.toml does not read (see above)");
    };
    match belt_app::config::providers(config, Default::default(), env) {
        Ok(p) => {
            let mut names: Vec<&str> = p.names().into_iter().collect();
            names.sort_unstable();
            let real: Vec<&str> = names.iter().copied().filter(|n| *n != "simulated").collect();
            let detail = format!("{} ({} besides the simulated one)", names.join(", "), real.len());
            ok("providers", detail)
        }
        Err(e) => fail("providers", format!("{e}; fix the [providers] section of belt.toml")),
    }
}

/// Which key variables are set (names only: a key's value is never read into the output).
fn keys(config: Option<&Config>, env: &dyn Fn(&str) -> Option<String>) -> Check {
    let set = |var: &str| env(var).is_some_and(|v| !v.trim().is_empty());
    let mut vars: Vec<String> =
        BUILTIN_PROVIDERS.iter().flat_map(|b| b.key_env.iter().map(|v| v.to_string())).collect();
    if let Some(c) = config {
        vars.extend(c.providers.values().filter_map(|p| p.api_key_env.clone()));
    }
    vars.dedup();
    let (present, missing): (Vec<&String>, Vec<&String>) = vars.iter().partition(|v| set(v));
    let names = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if present.is_empty() {
        return warn(
            "keys",
            format!(
                "no API key is set ({}), so runs use the simulated provider (or a local Ollama): \
                 export OPENAI_API_KEY=… (or another of them) for a hosted model",
                names(&missing)
            ),
        );
    }
    ok("keys", format!("set: {}; not set: {}", names(&present), names(&missing)))
}

/// How long a local server has to answer `belt doctor` (they are asked at once).
const LOCAL_LIMIT: Duration = Duration::from_millis(800);

/// The local model servers (llama.cpp, vLLM, LM Studio, Ollama): a line for each that
/// answers, with its models; one line naming where the others were looked for.
async fn local_servers(env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Vec<Check> {
    use belt_app::local::Reach;
    let servers = belt_app::local::servers(env, LOCAL_LIMIT).await;
    let mut checks = Vec::new();
    let mut silent = Vec::new();
    for s in &servers {
        let at = format!("{} ({} moves it)", s.base_url, s.base_url_env);
        match &s.reach {
            Reach::Models(models) => checks.push(ok(
                s.provider,
                format!(
                    "answers at {at}: {}; run with --model {}/{}",
                    models_text(models),
                    s.provider,
                    models.first().map_or("NAME", String::as_str)
                ),
            )),
            Reach::Answers(why) => checks
                .push(warn(s.provider, format!("something answers at {at}, but {why}; is it the server?"))),
            Reach::Unreachable(_) => silent.push(format!("{} at {at}", s.provider)),
        }
    }
    if !silent.is_empty() && checks.is_empty() {
        checks.push(warn(
            "local",
            format!(
                "no local model server answers ({}); start one (llama-server, `ollama serve`, vLLM, LM Studio) \
                 to use local models; not needed otherwise",
                silent.join("; ")
            ),
        ));
    } else if !silent.is_empty() {
        checks.push(ok("local", format!("not running: {}", silent.join("; "))));
    }
    checks
}

/// "2 models: a, b", at most 5 named.
fn models_text(models: &[String]) -> String {
    let named = models.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if models.len() > 5 { format!(" and {} more", models.len() - 5) } else { String::new() };
    match models.len() {
        0 => "no model loaded".into(),
        n => format!("{}: {named}{more}", belt_report::words::count(n as u64, "model")),
    }
}

/// A URL's password as `***` (`postgres://belt:secret@db/belt` → `postgres://belt:***@db/belt`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The store: where it is, how big, and whether it opens.
async fn store_check(spec: &StoreSpec) -> Check {
    let shown = redact(&spec.to_string());
    if let StoreSpec::Sqlite(path) = spec {
        match std::fs::metadata(path) {
            Ok(m) => {
                return match belt_store::open(spec).await {
                    Ok(_) => ok("store", format!("{shown} opens ({})", size(m.len()))),
                    Err(e) => fail(
                        "store",
                        format!(
                            "{shown} ({}) does not open: {e}; move the file aside to start afresh, or \
                             point --store (BELT_STORE) at another",
                            size(m.len())
                        ),
                    ),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return sqlite_to_be(path, &shown),
            Err(e) => return fail("store", format!("{shown} cannot be read: {e}; check its permissions")),
        }
    }
    match belt_store::open(spec).await {
        Ok(_) if *spec == StoreSpec::Memory => {
            warn("store", "memory: nothing outlives the process; use sqlite://PATH to keep runs")
        }
        Ok(_) => ok("store", format!("{shown} opens")),
        Err(e) => {
            fail("store", format!("{shown} does not open: {e}; check the URL and that the server runs"))
        }
    }
}

/// A SQLite store not created yet: fine if its directory can be made.
fn sqlite_to_be(path: &Path, shown: &str) -> Check {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut existing = dir.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => break,
        }
    }
    let writable = std::fs::metadata(existing).is_ok_and(|m| !m.permissions().readonly());
    if writable {
        ok("store", format!("{shown}: not created yet; the first run creates it"))
    } else {
        fail(
            "store",
            format!(
                "{shown}: {} cannot be written; choose another with --store sqlite://PATH",
                existing.display()
            ),
        )
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

/// The token `belt serve` asks for: `BELT_API_TOKEN`, else the file it generates.
fn api_token(home: &Path, env: &dyn Fn(&str) -> Option<String>) -> Check {
    let file = crate::serve_cmd::token_file(home);
    if env("BELT_API_TOKEN").is_some_and(|t| !t.trim().is_empty()) {
        return ok("api token", "BELT_API_TOKEN is set; belt serve uses it (not the file)");
    }
    match std::fs::metadata(&file) {
        Ok(m) if m.len() == 0 => fail(
            "api token",
            format!("{} is empty; delete it and belt serve makes a new one", file.display()),
        ),
        Ok(m) if loose(&m) => warn(
            "api token",
            format!("{} can be read by other users: chmod 600 {}", file.display(), file.display()),
        ),
        Ok(_) => ok("api token", format!("{} (belt serve and its dashboard ask for it)", file.display())),
        Err(_) => {
            ok("api token", format!("none yet; belt serve makes {} when it first starts", file.display()))
        }
    }
}

#[cfg(unix)]
fn loose(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn loose(_: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://belt:s3cret@db:5432/belt"), "postgres://belt:***@db:5432/belt");
        assert_eq!(redact("postgres://belt@db/belt"), "postgres://belt@db/belt");
        assert_eq!(redact("sqlite:///tmp/a@b/belt.db"), "sqlite:///tmp/a@b/belt.db");
        assert_eq!(redact("memory"), "memory");
    }

    #[test]
    fn messages_fit_one_line() {
        let toml = "not valid: TOML parse error at line 1, column 18\n  |\n1 | [providers.openai\n  |      ^\nunclosed table\n; fix it";
        assert_eq!(
            one_line(toml),
            "not valid: TOML parse error at line 1, column 18: unclosed table; fix it"
        );
    }
}

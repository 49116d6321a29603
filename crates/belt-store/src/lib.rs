//! belt-store: where runs are kept, so that a crashed run resumes without paying for a
//! completed call twice.
//!
//! Two stores implement belt-core's [`RunStore`], with the same records and semantics (one
//! conformance suite runs against both and the in-memory store): runs with their
//! definitions, step records, events, dead letters, leases and the response cache.
//!
//! - [`SqliteStore`] keeps them in one SQLite file: the embedded default, for the processes
//!   of one machine.
//! - [`PgStore`] keeps them in a PostgreSQL database, shared by every process and machine
//!   that drives, serves or follows runs: workers take runs with `FOR UPDATE SKIP LOCKED`,
//!   followers are woken by `LISTEN/NOTIFY` (see [`postgres`]).
//!
//! [`open`] turns a `--store` value (`sqlite://PATH`, `postgres://USER:PASSWORD@HOST/DB` or
//! `memory`) into a store; by default runs go to `$BELT_HOME/belt.db`, `BELT_HOME`
//! defaulting to the user's data directory.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("belt-store-doc-{}", std::process::id()));
//! let spec: belt_store::StoreSpec = format!("sqlite://{}/belt.db", dir.display()).parse()?;
//! let store = belt_store::open(&spec).await?;
//! assert!(store.list_runs(10).await?.is_empty());
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok(())
//! # }
//! ```

mod event_row;
mod packed;
pub mod postgres;
mod read_marks;
mod rows;
pub mod shared;
pub mod sqlite;
mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use belt_core::store::{MemoryStore, RunStore, StoreError};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Which store to use, as given to `--store`. Shown (`Display`, `Debug`) without a
/// PostgreSQL URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Nothing outlives the process.
    Memory,
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL (`postgres://` or `postgresql://`). Shown without
    /// its password.
    Postgres(String),
}

impl FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        if let Some(rest) = s.strip_prefix("postgres://").or_else(|| s.strip_prefix("postgresql://")) {
            if rest.is_empty() {
                return Err(format!(
                    "`{s}` names no PostgreSQL server; use postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ));
            }
            return Ok(StoreSpec::Postgres(s.to_string()));
        }
        match s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) {
            Some(path) if !path.is_empty() => Ok(StoreSpec::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "`{s}` is not a store; use sqlite://PATH (for example sqlite://runs/belt.db), \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE or memory"
            )),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreSpec::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("Memory"),
            StoreSpec::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            StoreSpec::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// A database URL with its password (in the user part or a `password=` parameter) replaced
/// by `***`, for messages and listings.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.find(['/', '?', '#']).map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        "" => format!("{authority}{tail}"),
        _ => format!("{scheme}://{authority}{tail}"),
    }
}

/// The message for a store whose schema a newer belt wrote.
pub(crate) fn newer_schema(store: &str, version: i64, known: i64) -> String {
    format!(
        "the store at {store} was written by a newer belt (schema version {version}, this belt knows \
         {known}); upgrade belt"
    )
}

/// `$BELT_HOME`, else `<user data dir>/belt` (e.g. `~/.local/share/belt`), else `./.belt`.
pub fn belt_home() -> PathBuf {
    match std::env::var_os("BELT_HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => dirs::data_dir().map(|d| d.join("belt")).unwrap_or_else(|| PathBuf::from(".belt")),
    }
}

/// The store used when none is named: `sqlite://$BELT_HOME/belt.db`.
pub fn default_spec() -> StoreSpec {
    StoreSpec::Sqlite(belt_home().join("belt.db"))
}

/// Open the store `spec` names.
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn RunStore>, StoreError> {
    Ok(match spec {
        StoreSpec::Memory => Arc::new(MemoryStore::new()),
        StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        StoreSpec::Postgres(url) => Arc::new(PgStore::open(url).await?),
    })
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;

//! belt-store: where runs are kept, so that a crashed run resumes without paying for a
//! completed call twice.
//!
//! [`SqliteStore`] implements belt-core's [`RunStore`] in one SQLite file: runs with their
//! definitions, step records, events, dead letters and the response cache. [`open`] turns a
//! `--store` value (`sqlite://PATH` or `memory`) into a store; by default runs go to
//! `$BELT_HOME/belt.db`, `BELT_HOME` defaulting to the user's data directory.
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
pub mod shared;
pub mod sqlite;
mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

pub use belt_core::store::{MemoryStore, RunStore, StoreError};
pub use sqlite::SqliteStore;

/// Which store to use, as given to `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Nothing outlives the process.
    Memory,
    Sqlite(PathBuf),
}

impl FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        match s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) {
            Some(path) if !path.is_empty() => Ok(StoreSpec::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "`{s}` is not a store; use sqlite://PATH (for example sqlite://runs/belt.db) or memory"
            )),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
        }
    }
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
    })
}

#[cfg(test)]
mod tests;

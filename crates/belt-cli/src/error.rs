//! Errors of the command line, each with its exit code.

/// What stops the CLI before or outside a run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: wrong arguments, unreadable files, unknown models. Exit code 2; nothing
    /// was called.
    #[error("{0}")]
    Usage(String),
    /// The run is recorded, but something the user asked for was lost on the way (the
    /// events file could not be written). Exit code 1.
    #[error("{0}")]
    Lost(String),
    /// A record in the store does not read back: the file was damaged. Exit code 1 (the
    /// input was fine; the message names the run and what to do).
    #[error("{0}")]
    Damaged(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Lost(_) | CliError::Damaged(_) => 1,
        }
    }
}

/// A store error: a damaged record exits 1; the others (a run another process drives, an
/// unknown run, a store that cannot be opened or written) stay bad input, exit 2.
impl From<belt_core::store::StoreError> for CliError {
    fn from(e: belt_core::store::StoreError) -> Self {
        match e {
            belt_core::store::StoreError::Damaged { .. } => CliError::Damaged(e.to_string()),
            other => CliError::Usage(other.to_string()),
        }
    }
}

/// A spec that cannot run, or a bad belt.toml: bad input (exit 2), the same message as
/// every other front end gives.
impl From<belt_app::AppError> for CliError {
    fn from(e: belt_app::AppError) -> Self {
        CliError::Usage(e.to_string())
    }
}

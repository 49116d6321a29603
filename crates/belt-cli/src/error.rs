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
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Lost(_) => 1,
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

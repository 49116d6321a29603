//! [`AppError`]: why a spec cannot become a run. Every front end shows the same message
//! for the same mistake: the CLI with exit code 2, HTTP as 422, MCP as a tool error.

/// A spec or configuration that cannot run. Nothing was called or recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Something in the spec is wrong; the message names the field (with its command-line
    /// flag) and says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// belt.toml is missing, unreadable or wrong.
    #[error("{0}")]
    Config(String),
}

/// A spec field as every front end names it: its JSON name and its command-line flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub json: &'static str,
    pub flag: &'static str,
}

impl Field {
    pub(crate) const fn new(json: &'static str, flag: &'static str) -> Field {
        Field { json, flag }
    }

    /// `invalid value 'V' for NAME (--FLAG): WHY` — the one shape of a field's mistake, so
    /// that a user of any front end finds the name they typed.
    pub(crate) fn invalid(self, value: impl std::fmt::Display, why: impl std::fmt::Display) -> AppError {
        AppError::Invalid(format!("invalid value '{value}' for {} ({}): {why}", self.json, self.flag))
    }
}

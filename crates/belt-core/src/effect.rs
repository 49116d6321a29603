//! Recorded effects that are not LLM calls — [`Ctx::step`] work and tool calls — under the
//! same engine policies as LLM calls: a timeout per attempt, retries where repeating is
//! safe, `step_retrying`/`step_failed` events, the journal (a resumed run returns the
//! recorded output instead of running the work again) and the dead-letter queue.
//!
//! Repeating an effect is not always safe: a write that timed out may have happened. So an
//! attempt is tried again only when the work says its failure left nothing behind
//! ([`EffectError::transient`]: a refused connection, a server that was not started) or
//! the caller declared it idempotent ([`EffectPolicy::idempotent`]: a search, a read). A
//! future given to [`Ctx::step`] runs at most once; [`Ctx::step_with`] takes a function
//! that makes a new attempt each time.

/// Why an effect's attempt failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectError {
    pub message: String,
    /// The attempt certainly did nothing (the connection was refused, the server was not
    /// running): it may be tried again even when the effect is not idempotent.
    pub transient: bool,
}

impl EffectError {
    /// A failure that trying again would not fix (bad arguments, a refusal).
    pub fn new(message: impl Into<String>) -> Self {
        EffectError { message: message.into(), transient: false }
    }

    /// A failure that left nothing behind; another attempt may succeed.
    pub fn transient(message: impl Into<String>) -> Self {
        EffectError { message: message.into(), transient: true }
    }
}

impl std::fmt::Display for EffectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EffectError {}

impl From<String> for EffectError {
    fn from(message: String) -> Self {
        EffectError::new(message)
    }
}

impl From<&str> for EffectError {
    fn from(message: &str) -> Self {
        EffectError::new(message)
    }
}

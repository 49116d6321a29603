//! Caps that stopped a pattern: every loop a pattern runs has one (`max_iterations`,
//! `max_rounds`…), and a run's result lists the ones that were hit ([`crate::RunResult::caps`]).
//!
//! The engine keeps the list; recording a hit (which also records the step that did not run
//! as skipped) is [`CapHit::record`], in the pattern library.

use serde::{Deserialize, Serialize};

use crate::step::StepId;

/// A loop or round cap that stopped a pattern: which cap, its limit, and the step that
/// would have run next (recorded in the run as skipped, with this text as its reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapHit {
    /// The cap's name as the pattern's builder calls it: `max_iterations`, `max_rounds`…
    pub cap: String,
    pub limit: usize,
    /// The step that did not run because of the cap.
    pub at: StepId,
}

impl std::fmt::Display for CapHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cap {} = {} reached; {} not run", self.cap, self.limit, self.at)
    }
}

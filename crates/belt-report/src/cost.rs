//! A cost as a person reads it, when some calls had no known price.
//!
//! A model without a price (a local server, a custom model not in belt's table nor in
//! `belt.toml`) makes the cost of its calls unknown, not zero. Every place belt shows a
//! cost — the CLI's tables and summary, `belt runs`, the dashboard, every report format —
//! writes it through [`Cost`], so it reads the same everywhere:
//!
//! ```
//! use belt_report::Cost;
//! assert_eq!(Cost::new(0.0123, 0).to_string(), "$0.0123");
//! assert_eq!(Cost::new(0.0123, 4).to_string(), "≥ $0.0123 (4 calls unpriced)");
//! assert_eq!(Cost::new(0.0, 3).to_string(), "unknown");
//! ```

use std::fmt;

use belt_core::{RunResult, StepOutcome};

/// What is known of a cost: the sum of the priced calls, and how many calls are not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// The priced calls' cost in USD: a lower bound when `unpriced_calls` > 0.
    pub known_usd: f64,
    /// Calls whose model has no known price.
    pub unpriced_calls: u64,
}

impl Cost {
    pub fn new(known_usd: f64, unpriced_calls: u64) -> Cost {
        Cost { known_usd, unpriced_calls }
    }

    /// A run's whole cost (its `usage.unpriced_calls` counts the calls left out).
    pub fn of_run(r: &RunResult) -> Cost {
        Cost::new(r.cost_usd, r.usage.unpriced_calls)
    }

    /// The cost of some steps: an unpriced step is one answered call without a price.
    pub fn of_steps<'a>(outcomes: impl IntoIterator<Item = &'a StepOutcome>) -> Cost {
        outcomes.into_iter().fold(Cost::default(), |c, o| {
            Cost::new(c.known_usd + o.cost_usd, c.unpriced_calls + u64::from(o.unpriced))
        })
    }

    /// Every call was priced: the figure is the cost.
    pub fn is_known(&self) -> bool {
        self.unpriced_calls == 0
    }
}

/// `$0.0123`; `≥ $0.0123 (4 calls unpriced)` when some calls have no price; `unknown` when
/// no priced call cost anything (a lower bound of $0 says nothing).
impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unpriced_calls {
            0 => write!(f, "${:.4}", self.known_usd),
            _ if self.known_usd <= 0.0 => f.write_str("unknown"),
            n => write!(f, "≥ ${:.4} ({} unpriced)", self.known_usd, crate::words::count(n, "call")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_without_a_price_make_their_sum_a_lower_bound_or_unknown() {
        let priced = StepOutcome { cost_usd: 0.5, ..StepOutcome::default() };
        let unpriced = StepOutcome { unpriced: true, ..StepOutcome::default() };
        assert_eq!(Cost::of_steps([&priced, &priced]).to_string(), "$1.0000");
        assert_eq!(Cost::of_steps([&priced, &unpriced]).to_string(), "≥ $0.5000 (1 call unpriced)");
        assert_eq!(Cost::of_steps([&unpriced, &unpriced]).to_string(), "unknown");
        assert!(!Cost::of_steps([&unpriced]).is_known());
        // No steps cost nothing, and that is known.
        assert_eq!(Cost::of_steps([]).to_string(), "$0.0000");
    }
}

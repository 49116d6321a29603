//! Hard budgets: USD, tokens and calls per run.
//!
//! Every call reserves its worst case *before* it is made (the input-token upper bound
//! from [`crate::llm::LlmRequest::input_token_bound`] plus `max_tokens`, at the model's
//! price) and settles to the provider's reported usage afterwards. A reservation that
//! does not fit under a cap is refused, so `spent + reserved <= max` holds at every
//! instant and the reported spend can never pass a cap, however many branches run at
//! once. The price of that guarantee is some pessimism near the cap: a call that would
//! have fit in practice may be refused because its worst case does not.
//!
//! The guarantee is about what is *booked*, and it does not rest on the provider's word: a
//! report above the request's limits (more output than `max_tokens`, more input than the
//! bound) is booked at those limits, so no call is ever booked above its reservation. The
//! engine keeps the report beside the booked figures and says so in a `usage_overreported`
//! event; a run with a budget stops when the report is past any honest miscount, since
//! what the provider bills is then anyone's guess (`Ctx::book` in `ctx.rs`).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Caps for one run. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
}

impl Budget {
    pub fn is_unlimited(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none() && self.max_calls.is_none()
    }

    /// Each cap of `self`, else `other`'s: `self` overrides where it sets a cap.
    pub fn or(self, other: Budget) -> Budget {
        Budget {
            max_cost_usd: self.max_cost_usd.or(other.max_cost_usd),
            max_tokens: self.max_tokens.or(other.max_tokens),
            max_calls: self.max_calls.or(other.max_calls),
        }
    }
}

/// What one call may cost at most, or did cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Amount {
    pub cost_usd: f64,
    pub tokens: u64,
    pub calls: u64,
}

impl Amount {
    /// Both amounts together.
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            cost_usd: self.cost_usd + other.cost_usd,
            tokens: self.tokens + other.tokens,
            calls: self.calls + other.calls,
        }
    }
}

/// Whether `needed` fits under `budget`'s caps on top of `used` (spent and reserved): the
/// rule of every reservation, a run's and a budget pool's alike.
pub fn check(budget: &Budget, used: Amount, needed: Amount) -> Result<(), Refusal> {
    if let Some(max) = budget.max_calls
        && used.calls + needed.calls > max
    {
        return Err(Refusal {
            limit: "calls",
            used: used.calls as f64,
            max: max as f64,
            needed: needed.calls as f64,
        });
    }
    if let Some(max) = budget.max_tokens
        && used.tokens + needed.tokens > max
    {
        return Err(Refusal {
            limit: "tokens",
            used: used.tokens as f64,
            max: max as f64,
            needed: needed.tokens as f64,
        });
    }
    // A tiny tolerance absorbs float rounding of sums; it is far below a cent.
    if let Some(max) = budget.max_cost_usd
        && used.cost_usd + needed.cost_usd > max + 1e-12
    {
        return Err(Refusal { limit: "cost_usd", used: used.cost_usd, max, needed: needed.cost_usd });
    }
    Ok(())
}

/// A refused reservation: which limit, how much is used (spent + reserved), the cap, and
/// what the call needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub limit: &'static str,
    pub used: f64,
    pub max: f64,
    pub needed: f64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fmt_v = |v: f64| {
            if self.limit == "cost_usd" { format!("${v:.4}") } else { format!("{v:.0}") }
        };
        write!(
            f,
            "budget max_{} = {} would be exceeded: {} already used or reserved, this call needs up to {}",
            self.limit.trim_end_matches("_usd"),
            fmt_v(self.max),
            fmt_v(self.used),
            fmt_v(self.needed)
        )
    }
}

/// A crossing of the warning threshold (80% by default), reported once per limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub limit: &'static str,
    pub used: f64,
    pub max: f64,
}

/// The run's account: spent and reserved amounts against the caps.
#[derive(Debug)]
pub struct Ledger {
    budget: Budget,
    /// The fraction of a cap at which a warning is due.
    warn_at: f64,
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    spent: Amount,
    reserved: Amount,
    warned: [bool; 3],
}

/// The fraction of a cap at which `budget_warning` fires, unless the run says otherwise
/// ([`crate::RunOptions::budget_warn_at`]).
pub const WARN_AT: f64 = 0.8;

impl Ledger {
    pub fn new(budget: Budget) -> Self {
        Ledger { budget, warn_at: WARN_AT, state: Mutex::new(LedgerState::default()) }
    }

    /// Warn when the spending reaches `fraction` of a cap (0 < fraction <= 1) instead of
    /// [`WARN_AT`].
    pub fn warn_at(mut self, fraction: f64) -> Self {
        self.warn_at = fraction;
        self
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Reserve `worst` or refuse. On success the caller must later [`Ledger::settle`] the
    /// same `worst` exactly once.
    pub fn reserve(&self, worst: Amount) -> Result<(), Refusal> {
        let mut s = self.lock();
        check(&self.budget, s.spent.plus(s.reserved), worst)?;
        s.reserved = s.reserved.plus(worst);
        Ok(())
    }

    /// Release the reservation `worst` and book the `actual` amount. Returns the limits
    /// that crossed the warning threshold for the first time.
    pub fn settle(&self, worst: Amount, actual: Amount) -> Vec<Warning> {
        let mut s = self.lock();
        s.reserved.calls -= worst.calls;
        s.reserved.tokens -= worst.tokens;
        s.reserved.cost_usd = (s.reserved.cost_usd - worst.cost_usd).max(0.0);
        s.spent.calls += actual.calls;
        s.spent.tokens += actual.tokens;
        s.spent.cost_usd += actual.cost_usd;
        let mut warnings = Vec::new();
        let checks = [
            ("cost_usd", s.spent.cost_usd, self.budget.max_cost_usd),
            ("tokens", s.spent.tokens as f64, self.budget.max_tokens.map(|v| v as f64)),
            ("calls", s.spent.calls as f64, self.budget.max_calls.map(|v| v as f64)),
        ];
        for (i, (limit, used, max)) in checks.into_iter().enumerate() {
            if let Some(max) = max
                && !s.warned[i]
                && used >= self.warn_at * max
            {
                s.warned[i] = true;
                warnings.push(Warning { limit, used, max });
            }
        }
        warnings
    }

    /// Book amounts spent before this ledger existed (a resumed run's recorded steps), so
    /// that the caps cover the whole run and nothing is counted twice.
    pub fn preload(&self, spent: Amount) {
        let mut s = self.lock();
        s.spent.calls += spent.calls;
        s.spent.tokens += spent.tokens;
        s.spent.cost_usd += spent.cost_usd;
    }

    /// What has been booked so far.
    pub fn spent(&self) -> Amount {
        self.lock().spent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amt(cost: f64, tokens: u64) -> Amount {
        Amount { cost_usd: cost, tokens, calls: 1 }
    }

    #[test]
    fn reservations_never_pass_the_cap() {
        let ledger = Ledger::new(Budget { max_cost_usd: Some(1.0), ..Budget::default() });
        ledger.reserve(amt(0.6, 10)).unwrap();
        let refused = ledger.reserve(amt(0.5, 10)).unwrap_err();
        assert_eq!(refused.limit, "cost_usd");
        assert!(refused.to_string().contains("max_cost"), "{refused}");
        // Settling to less than reserved frees room.
        ledger.settle(amt(0.6, 10), amt(0.2, 5));
        ledger.reserve(amt(0.5, 10)).unwrap();
        assert!((ledger.spent().cost_usd - 0.2).abs() < 1e-9);
    }

    #[test]
    fn calls_and_tokens_caps() {
        let ledger = Ledger::new(Budget { max_calls: Some(2), max_tokens: Some(100), ..Budget::default() });
        ledger.reserve(amt(0.0, 40)).unwrap();
        ledger.reserve(amt(0.0, 40)).unwrap();
        assert_eq!(ledger.reserve(amt(0.0, 1)).unwrap_err().limit, "calls");
        let ledger = Ledger::new(Budget { max_tokens: Some(100), ..Budget::default() });
        ledger.reserve(amt(0.0, 40)).unwrap();
        ledger.settle(amt(0.0, 40), amt(0.0, 40));
        ledger.reserve(amt(0.0, 40)).unwrap();
        let refusal = ledger.reserve(amt(0.0, 30)).unwrap_err();
        assert_eq!((refusal.limit, refusal.used, refusal.needed), ("tokens", 80.0, 30.0));
    }

    #[test]
    fn warning_fires_once_at_eighty_percent() {
        let ledger = Ledger::new(Budget { max_tokens: Some(100), ..Budget::default() });
        ledger.reserve(amt(0.0, 50)).unwrap();
        assert!(ledger.settle(amt(0.0, 50), amt(0.0, 50)).is_empty());
        ledger.reserve(amt(0.0, 40)).unwrap();
        let w = ledger.settle(amt(0.0, 40), amt(0.0, 35));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].limit, "tokens");
        ledger.reserve(amt(0.0, 5)).unwrap();
        assert!(ledger.settle(amt(0.0, 5), amt(0.0, 5)).is_empty());
    }

    #[test]
    fn the_warning_threshold_is_configurable() {
        let ledger = Ledger::new(Budget { max_tokens: Some(100), ..Budget::default() }).warn_at(0.5);
        ledger.reserve(amt(0.0, 45)).unwrap();
        assert!(ledger.settle(amt(0.0, 45), amt(0.0, 45)).is_empty(), "45% is below 50%");
        ledger.reserve(amt(0.0, 10)).unwrap();
        let w = ledger.settle(amt(0.0, 10), amt(0.0, 10));
        assert_eq!(w.len(), 1, "55% crosses 50%");
        assert_eq!((w[0].limit, w[0].used, w[0].max), ("tokens", 55.0, 100.0));
    }
}

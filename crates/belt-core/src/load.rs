//! Switching a tier to a faster model when its provider signals load.
//!
//! A provider under load answers 429 (rate limited) or answers slowly. Retries and the
//! provider's limiter handle one call's trouble; when the trouble persists, a run that can
//! do with a faster (smaller, cheaper) model is better served by moving the rest of a tier's
//! calls to it than by waiting out every call. [`LoadSwitch`] says which tier, to which model,
//! and what counts as a sign of load; the engine ([`crate::Ctx`]) counts the signs of that
//! tier's calls and, at the threshold, sends its later calls to the faster model — through
//! the same fallback chain machinery as `a/x,b/y` (the faster model may be a chain itself).
//! The switch is a `degraded` event and a line of the run's report.
//!
//! A step keeps its request (and so its input hash) when it switches: a resumed run replays
//! its recorded steps whichever model answered them, as it does for fallbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::step::Tier;

/// When and where a tier switches models under load. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSwitch {
    /// The tier whose calls switch (the workers, in the cascade).
    pub tier: Tier,
    /// The model (or fallback chain) its later calls go to.
    pub to: Arc<str>,
    /// A call that answered slower than this is a sign of load (besides every 429).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::policy::opt_duration_ms")]
    pub slow: Option<Duration>,
    /// How many signs of load make the tier switch.
    pub after: u32,
}

impl LoadSwitch {
    /// The default number of signs before a switch: one 429 or slow call is weather, three
    /// are a climate.
    pub const AFTER: u32 = 3;

    /// Switch `tier` to `to` after [`LoadSwitch::AFTER`] 429s or calls slower than `slow`.
    pub fn new(tier: Tier, to: &str, slow: Option<Duration>) -> Self {
        LoadSwitch { tier, to: Arc::from(to), slow, after: Self::AFTER }
    }
}

/// What a run counts of its tier's load: the signs so far, and whether it switched.
#[derive(Debug)]
pub(crate) struct LoadWatch {
    pub switch: LoadSwitch,
    rate_limited: AtomicU32,
    slow: AtomicU32,
    switched: AtomicBool,
}

/// A sign of load one call gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    RateLimited,
    Slow,
}

impl LoadWatch {
    pub fn new(switch: LoadSwitch) -> Self {
        LoadWatch {
            switch,
            rate_limited: AtomicU32::new(0),
            slow: AtomicU32::new(0),
            switched: AtomicBool::new(false),
        }
    }

    /// The model calls of `tier` go to, when the tier has switched.
    pub fn route(&self, tier: &Tier) -> Option<&Arc<str>> {
        (self.switched.load(Ordering::Acquire) && *tier == self.switch.tier).then_some(&self.switch.to)
    }

    /// Count a sign of load; `Some(reason)` the one time the count reaches the threshold
    /// (the caller announces the switch).
    pub fn note(&self, sign: Sign) -> Option<String> {
        if self.switched.load(Ordering::Acquire) {
            return None;
        }
        match sign {
            Sign::RateLimited => self.rate_limited.fetch_add(1, Ordering::AcqRel),
            Sign::Slow => self.slow.fetch_add(1, Ordering::AcqRel),
        };
        let (limited, slow) = (self.rate_limited.load(Ordering::Acquire), self.slow.load(Ordering::Acquire));
        if limited + slow < self.switch.after || self.switched.swap(true, Ordering::AcqRel) {
            return None;
        }
        let mut signs = Vec::new();
        if limited > 0 {
            signs.push(format!("{} rate limited (429)", crate::words::count(limited.into(), "call")));
        }
        if slow > 0
            && let Some(after) = self.switch.slow
        {
            signs.push(format!(
                "{} slower than {}",
                crate::words::count(slow.into(), "call"),
                crate::words::seconds(after)
            ));
        }
        Some(format!("the provider signalled load: {}", signs.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_switches_once_at_the_threshold() {
        let watch = LoadWatch::new(LoadSwitch::new(Tier::Worker, "t/fast", Some(Duration::from_secs(2))));
        assert_eq!(watch.route(&Tier::Worker), None);
        assert_eq!(watch.note(Sign::RateLimited), None);
        assert_eq!(watch.note(Sign::Slow), None);
        let reason = watch.note(Sign::RateLimited).expect("the third sign switches");
        assert_eq!(reason, "the provider signalled load: 2 calls rate limited (429), 1 call slower than 2 s");
        assert_eq!(watch.note(Sign::Slow), None, "announced once");
        assert_eq!(watch.route(&Tier::Worker).map(|m| &**m), Some("t/fast"));
        assert_eq!(watch.route(&Tier::Executive), None, "only the tier switches");
    }
}

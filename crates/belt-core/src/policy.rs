//! Per-step policies: timeout, retries and backoff, with defaults per tier.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::step::{StepId, Tier};

/// How one step is run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepPolicy {
    /// Limit on one attempt; a timed-out attempt counts as a retryable failure.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Attempts after the first one, for retryable errors only.
    pub retries: u32,
    /// First backoff delay; doubles per attempt up to `backoff_max`.
    #[serde(with = "duration_ms")]
    pub backoff_base: Duration,
    #[serde(with = "duration_ms")]
    pub backoff_max: Duration,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            timeout: Duration::from_secs(180),
            retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl StepPolicy {
    /// The delay before attempt `failed_attempt + 1`.
    ///
    /// Exponential with "equal jitter": half the exponential delay is kept, the other half
    /// is random, so parallel branches that failed together do not retry together, yet no
    /// retry comes sooner than half the nominal delay. The jitter is derived from the StepId
    /// and attempt, so it is reproducible. A provider's Retry-After wins when given (capped at
    /// `backoff_max`, so a hostile header cannot park a run).
    pub fn backoff(&self, step: &StepId, failed_attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.backoff_max);
        }
        let exp = failed_attempt.saturating_sub(1).min(20);
        let nominal = self.backoff_base.saturating_mul(1u32 << exp).min(self.backoff_max);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(step.as_str().as_bytes(), failed_attempt as u64);
        let frac = (h >> 11) as f64 / (1u64 << 53) as f64;
        nominal / 2 + nominal.mul_f64(0.5 * frac)
    }
}

/// The longest timeout of one attempt, in seconds (a day). Longer is a mistake, and a float
/// beyond `Duration`'s range would panic on conversion: every front end checks through
/// [`timeout_secs`].
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Seconds as a step timeout: positive, finite, at most [`MAX_TIMEOUT_SECS`]; else the one
/// message every front end shows.
pub fn timeout_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECS {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("must be a positive number of seconds, at most {MAX_TIMEOUT_SECS}"))
    }
}

/// Policies by tier, with a default for tiers not listed.
///
/// The default gives every tier 180 s per attempt, synthesizers 240 s and the executive
/// 300 s (they read more and write more), and 2 retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    pub default: StepPolicy,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub tiers: HashMap<String, StepPolicy>,
}

impl Default for Policies {
    fn default() -> Self {
        let base = StepPolicy::default();
        let mut p = Policies { default: base, tiers: HashMap::new() };
        p.set(&Tier::Synthesizer, StepPolicy { timeout: Duration::from_secs(240), ..base });
        p.set(&Tier::Executive, StepPolicy { timeout: Duration::from_secs(300), ..base });
        p
    }
}

impl Policies {
    pub fn for_tier(&self, tier: &Tier) -> &StepPolicy {
        self.tiers.get(tier.as_str()).unwrap_or(&self.default)
    }

    pub fn set(&mut self, tier: &Tier, policy: StepPolicy) {
        self.tiers.insert(tier.as_str().to_string(), policy);
    }

    /// Apply `f` to the default and to every tier's policy.
    pub fn update_all(&mut self, f: impl Fn(&mut StepPolicy)) {
        f(&mut self.default);
        self.tiers.values_mut().for_each(f);
    }

    /// Give every tier this timeout and these retries, where given (an override of the
    /// per-tier defaults: `--timeout`, `--retries`, a workflow file's `defaults`).
    pub fn override_all(&mut self, timeout: Option<Duration>, retries: Option<u32>) {
        self.update_all(|p| {
            p.timeout = timeout.unwrap_or(p.timeout);
            p.retries = retries.unwrap_or(p.retries);
        });
    }
}

pub(crate) mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = StepPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..StepPolicy::default()
        };
        let s = StepId::new("worker/001");
        let d1 = p.backoff(&s, 1, None);
        let d2 = p.backoff(&s, 2, None);
        let d9 = p.backoff(&s, 9, None);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
        assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200), "{d2:?}");
        assert!(d9 <= Duration::from_secs(1) && d9 >= Duration::from_millis(500), "{d9:?}");
        // Different steps get different jitter.
        let other = p.backoff(&StepId::new("worker/002"), 1, None);
        assert_ne!(d1, other);
        // Retry-After wins, capped.
        assert_eq!(p.backoff(&s, 1, Some(Duration::from_millis(700))), Duration::from_millis(700));
        assert_eq!(p.backoff(&s, 1, Some(Duration::from_secs(600))), Duration::from_secs(1));
    }
}

//! Per-step policies: timeout, retries and backoff, with defaults per tier; and for
//! effects (tool calls, [`crate::Ctx::step`] work), whether another attempt is safe
//! ([`Effect`], [`EffectError`]).

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

/// How one effect is run: the engine's policy for its tier (or for tools), and whether
/// repeating it is harmless.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    pub policy: StepPolicy,
    /// A failed or timed-out attempt may be repeated (a read, a search, a pure function).
    pub idempotent: bool,
}

impl Effect {
    /// Run under `policy`, repeating only failures the work marks transient.
    pub fn new(policy: StepPolicy) -> Self {
        Effect { policy, idempotent: false }
    }

    /// Repeating the work does no harm: any failure or timeout may be tried again.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
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

/// The longest deadline of a whole run, in seconds (a week).
pub const MAX_DEADLINE_SECS: f64 = 604_800.0;

/// Seconds as a run's deadline ([`crate::RunOptions::deadline`]): positive, finite, at most
/// [`MAX_DEADLINE_SECS`]; else the one message every front end shows.
pub fn deadline_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= MAX_DEADLINE_SECS {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("must be a positive number of seconds, at most {MAX_DEADLINE_SECS} (a week)"))
    }
}

/// Policies by tier, with a default for tiers not listed.
///
/// The default gives every tier 180 s per attempt, synthesizers 240 s and the executive
/// 300 s (they read more and write more), tool calls 60 s (the `tool` key; see
/// [`Policies::for_tools`]), and 2 retries.
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
        p.tiers.insert(TOOLS.into(), Policies::TOOL_DEFAULT);
        p
    }
}

/// The key of the tool calls' policy in [`Policies::tiers`].
const TOOLS: &str = "tool";

impl Policies {
    pub fn for_tier(&self, tier: &Tier) -> &StepPolicy {
        // Asked for every call, of a map of a few entries (three by default): comparing
        // the names costs less than hashing one with SipHash (~200 instructions).
        let name = tier.as_str();
        let found = if self.tiers.len() <= 8 {
            self.tiers.iter().find(|(k, _)| k.as_str() == name).map(|(_, p)| p)
        } else {
            self.tiers.get(name)
        };
        found.unwrap_or(&self.default)
    }

    /// Tool calls: 60 s per call, 2 retries (where repeating is safe), backoff from
    /// 250 ms to 10 s. A tool is a local program or a nearby server: it should answer
    /// sooner than a model writing a long reply.
    pub const TOOL_DEFAULT: StepPolicy = StepPolicy {
        timeout: Duration::from_secs(60),
        retries: 2,
        backoff_base: Duration::from_millis(250),
        backoff_max: Duration::from_secs(10),
    };

    /// How tool calls run, unless a tool says otherwise ([`crate::tools::ToolPolicy`]).
    pub fn for_tools(&self) -> &StepPolicy {
        self.tiers.get(TOOLS).unwrap_or(&Policies::TOOL_DEFAULT)
    }

    /// Set how tool calls run (`--tool-timeout`, a workflow file's `defaults`).
    pub fn set_tools(&mut self, policy: StepPolicy) {
        self.tiers.insert(TOOLS.into(), policy);
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

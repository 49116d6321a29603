//! Step identity: the deterministic names under which work is recorded and replayed.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The deterministic name of one piece of work in a run: `decompose`, `worker/007`,
/// `synth/1/003`, `executive`.
///
/// A StepId must be the same every time the run's code reaches the same work, because
/// it is the key under which the step's input hash and output are recorded: on resume a
/// recorded StepId returns its output instead of calling the provider again. Numbers are
/// zero-padded (at least three digits) so ids sort in plan order as plain strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(Arc<str>);

impl StepId {
    pub fn new(name: impl AsRef<str>) -> Self {
        StepId(Arc::from(name.as_ref()))
    }

    /// `prefix/NNN`, 1-based, padded to `width` digits (at least 3).
    pub fn indexed(prefix: &str, index: usize, width: usize) -> Self {
        // Written by hand on the stack: one allocation (the Arc), and none of the formatting
        // machinery, which cost ~500 instructions an id (one id per step of every run).
        let width = width.max(3);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = index;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = &digits[at..];
        let zeros = width.saturating_sub(digits.len());
        let len = prefix.len() + 1 + zeros + digits.len();
        let mut buf = [0u8; 96];
        if len > buf.len() {
            return StepId(Arc::from(format!("{prefix}/{index:0width$}")));
        }
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()] = b'/';
        buf[prefix.len() + 1..prefix.len() + 1 + zeros].fill(b'0');
        buf[len - digits.len()..len].copy_from_slice(digits);
        match std::str::from_utf8(&buf[..len]) {
            Ok(s) => StepId(Arc::from(s)),
            Err(_) => StepId(Arc::from(format!("{prefix}/{index:0width$}"))),
        }
    }

    /// A child of this step: `self/name`. Patterns use it to give sub-steps a scope.
    pub fn child(&self, name: impl fmt::Display) -> Self {
        StepId(Arc::from(format!("{}/{name}", self.0)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Digits needed to print `n` (at least 3), for [`StepId::indexed`].
pub fn index_width(n: usize) -> usize {
    n.max(1).to_string().len().max(3)
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepId({})", self.0)
    }
}

impl From<&str> for StepId {
    fn from(s: &str) -> Self {
        StepId::new(s)
    }
}

impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(StepId(Arc::from(s)))
    }
}

/// The role a step plays. The cascade's tiers are named; other patterns use
/// [`Tier::Agent`] or a custom name.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Tier {
    Decomposer,
    Worker,
    Synthesizer,
    Executive,
    Agent,
    Custom(Arc<str>),
}

impl Tier {
    pub fn as_str(&self) -> &str {
        match self {
            Tier::Decomposer => "decomposer",
            Tier::Worker => "worker",
            Tier::Synthesizer => "synthesizer",
            Tier::Executive => "executive",
            Tier::Agent => "agent",
            Tier::Custom(s) => s,
        }
    }

    pub fn parse(s: &str) -> Tier {
        match s {
            "decomposer" => Tier::Decomposer,
            "worker" => Tier::Worker,
            "synthesizer" => Tier::Synthesizer,
            "executive" => Tier::Executive,
            "agent" => Tier::Agent,
            other => Tier::Custom(Arc::from(other)),
        }
    }

    /// Order of tiers in reports: the plan first, the final synthesis last.
    pub fn rank(&self) -> u8 {
        match self {
            Tier::Decomposer => 0,
            Tier::Worker => 1,
            Tier::Agent | Tier::Custom(_) => 2,
            Tier::Synthesizer => 3,
            Tier::Executive => 4,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Tier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Tier::parse(&s))
    }
}

/// What the engine needs to know about a step besides its request: its id, its tier, and
/// which steps' outputs it consumes (shown in the run's record and reports).
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub id: StepId,
    pub tier: Tier,
    pub inputs: Vec<StepId>,
    /// The pattern can shorten or split this step's prompt: when the model answers that it
    /// does not fit its context window ([`crate::llm::LlmError::PromptTooLong`]), the step
    /// is handed back unrecorded — no failure, no dead letter — for the pattern to ask
    /// again under the same id with a smaller request (see [`StepSpec::resizable`]).
    pub resizable: bool,
}

impl StepSpec {
    pub fn new(id: impl Into<StepId>, tier: Tier) -> Self {
        StepSpec { id: id.into(), tier, inputs: Vec::new(), resizable: false }
    }
    pub fn inputs(mut self, inputs: Vec<StepId>) -> Self {
        self.inputs = inputs;
        self
    }
    /// Hand a `prompt_too_long` answer back to the caller instead of failing the step (the
    /// cascade's synthesizers split or shorten their inputs then).
    pub fn resizable(mut self) -> Self {
        self.resizable = true;
        self
    }
}

impl From<String> for StepId {
    fn from(s: String) -> Self {
        StepId(Arc::from(s))
    }
}

/// Zero-padded 1-based position, at least `min` digits (`02`, `007`).
pub(crate) fn pad(i: usize, count: usize, min: usize) -> String {
    let width = count.max(1).to_string().len().max(min);
    format!("{i:0width$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_ids_are_formatted_as_format_would() {
        for prefix in ["worker", "synth/2", "", "ünï", &"p".repeat(90)] {
            for width in [0, 3, 6, 25] {
                for index in [0, 1, 9, 10, 99, 100, 12_345, 1_000_000, usize::MAX] {
                    let expected = format!("{prefix}/{index:0w$}", w = width.max(3));
                    assert_eq!(StepId::indexed(prefix, index, width).as_str(), expected);
                }
            }
        }
    }

    #[test]
    fn indexed_ids_pad_and_sort_in_plan_order() {
        assert_eq!(StepId::indexed("worker", 7, 3).as_str(), "worker/007");
        assert_eq!(StepId::indexed("worker", 7, index_width(100_000)).as_str(), "worker/000007");
        let a = StepId::indexed("worker", 9, 3);
        let b = StepId::indexed("worker", 10, 3);
        assert!(a < b);
        assert_eq!(StepId::new("synth").child("1").child("003").as_str(), "synth/1/003");
    }

    #[test]
    fn tier_round_trips_through_json() {
        for t in
            [Tier::Decomposer, Tier::Worker, Tier::Synthesizer, Tier::Executive, Tier::Custom("judge".into())]
        {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Tier>(&json).unwrap(), t);
        }
    }
}

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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ctx::{Attempt, Ctx, StepError, StepReply};
use crate::event::EventKind;
use crate::policy::StepPolicy;
pub use crate::policy::{Effect, EffectError};
use crate::step::{StepId, StepSpec};
use crate::store::{InputHash, LetterWork};

/// Why an effect gave up after its attempts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GaveUp {
    Failed(EffectError),
    TimedOut(Duration),
}

impl GaveUp {
    fn kind(&self) -> &'static str {
        match self {
            GaveUp::Failed(e) if e.transient => "unavailable",
            GaveUp::Failed(_) => "failed",
            GaveUp::TimedOut(_) => "timeout",
        }
    }

    fn describe(&self, attempts: u32) -> String {
        let tries = if attempts == 1 { String::new() } else { format!(" (after {attempts} attempts)") };
        match self {
            GaveUp::Failed(e) => format!("{e}{tries}"),
            GaveUp::TimedOut(after) => format!("timed out after {after:.1?}{tries}"),
        }
    }
}

/// What the journal keeps of an effect that gave up and was dead-lettered, so that
/// `belt dlq retry` can run it again.
pub(crate) struct Letter {
    pub work: LetterWork,
    /// What the caller records instead of failing (a tool's error result, which the model
    /// reads); `None` fails the step.
    pub recover: Option<fn(&str) -> String>,
}

impl Ctx {
    /// A recorded, effectful step that is not an LLM call: `work` runs once per run; on
    /// resume its recorded output is returned instead. The output is stored as JSON.
    ///
    /// The attempt is limited by the step's tier timeout ([`crate::Policies`]); a failure
    /// fails the step, with a `step_failed` event and a dead letter. A future cannot be
    /// run twice, so nothing is retried: [`Ctx::step_with`] takes work that can be.
    pub async fn step<T, F>(&self, spec: StepSpec, input: &impl Serialize, work: F) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, String>>,
    {
        let effect = Effect { policy: *self.shared.policies.for_tier(&spec.tier), idempotent: false };
        let mut work = Some(work);
        let once = move || {
            let work = work.take();
            async move {
                match work {
                    Some(work) => work.await.map_err(EffectError::new),
                    None => Err(EffectError::new("a step's future cannot run twice")),
                }
            }
        };
        let effect = Effect { policy: StepPolicy { retries: 0, ..effect.policy }, ..effect };
        self.step_with(spec, input, effect, once).await
    }

    /// A recorded effect with the engine's policies: each attempt calls `work` again and
    /// is limited by `effect.policy.timeout`; a failed attempt is retried (after the
    /// policy's backoff, with a `step_retrying` event) when it is transient or the effect is
    /// idempotent; the last failure fails the step and leaves a dead letter. On resume the
    /// recorded output is returned and `work` is not called.
    pub async fn step_with<T, W, Fut>(
        &self,
        spec: StepSpec,
        input: &impl Serialize,
        effect: Effect,
        work: W,
    ) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        W: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EffectError>>,
    {
        let text = serde_json::to_string(input).map_err(|e| StepError::Failed {
            step: spec.id.clone(),
            message: format!("input not serializable: {e}"),
        })?;
        let input = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let letter = Letter { work: LetterWork::Step { input }, recover: None };
        self.effect(spec, &text, effect, work, letter).await
    }

    /// The one path of every recorded effect; see [`Ctx::step_with`]. `input` is the
    /// input's JSON as serialized (its hash keys the record: through a `Value` an object's
    /// keys would be sorted, and runs recorded before would no longer replay). A `letter`
    /// with `recover` records what it returns when the work gives up, instead of failing.
    pub(crate) async fn effect<T, W, Fut>(
        &self,
        spec: StepSpec,
        input: &str,
        effect: Effect,
        mut work: W,
        letter: Letter,
    ) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        W: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EffectError>>,
    {
        let hash = InputHash::new(xxhash_rust::xxh3::xxh3_128(input.as_bytes()));
        if let Some(rec) = self.recorded(&spec.id) {
            let reply = self.replay(spec.clone(), rec, hash)?;
            return decode(&spec.id, &reply.text);
        }
        let mut at = self.begin();
        let no_model: Arc<str> = Arc::from("");
        if let Some(stop) = self.stopping() {
            return Err(self.refuse_start(&spec, no_model, &at, stop));
        }
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::StepStarted { tier: spec.tier.clone(), model: no_model.clone() },
        );
        let gave_up = loop {
            at.attempts += 1;
            let failure = match tokio::time::timeout(effect.policy.timeout, work()).await {
                Ok(Ok(value)) => return self.finish_effect(&spec, &at, hash, &value).await.map(|()| value),
                Ok(Err(e)) => GaveUp::Failed(e),
                Err(_) => GaveUp::TimedOut(effect.policy.timeout),
            };
            let repeatable = effect.idempotent || matches!(&failure, GaveUp::Failed(e) if e.transient);
            if !repeatable || at.attempts > effect.policy.retries || self.stopping().is_some() {
                break failure;
            }
            let delay = effect.policy.backoff(&spec.id, at.attempts, None);
            let delay_ms = delay.as_millis() as u64;
            self.retrying(&spec, "", at.attempts, (&failure.describe(1), failure.kind()), delay_ms);
            tokio::time::sleep(delay).await;
        };
        self.give_up(spec, &at, hash, gave_up, letter).await
    }

    /// Record an effect's output as the step's.
    async fn finish_effect<T: Serialize>(
        &self,
        spec: &StepSpec,
        at: &Attempt,
        hash: InputHash,
        value: &T,
    ) -> Result<(), StepError> {
        let no_model: Arc<str> = Arc::from("");
        match serde_json::to_string(value) {
            Ok(text) => {
                let mut reply = StepReply::new(text);
                reply.outcome.model = no_model;
                self.complete(spec, at, hash, reply).await.map(drop)
            }
            Err(e) => {
                let message = format!("output not serializable: {e}");
                Err(self.fail(spec, no_model, at, StepError::Failed { step: spec.id.clone(), message }))
            }
        }
    }

    /// The effect's last attempt failed: keep a dead letter, then fail the step, or record
    /// what the caller makes of the failure.
    async fn give_up<T: DeserializeOwned>(
        &self,
        spec: StepSpec,
        at: &Attempt,
        hash: InputHash,
        gave_up: GaveUp,
        letter: Letter,
    ) -> Result<T, StepError> {
        let message = gave_up.describe(at.attempts);
        let err = match &gave_up {
            GaveUp::TimedOut(after) => {
                StepError::TimedOut { step: spec.id.clone(), after: *after, attempts: at.attempts }
            }
            GaveUp::Failed(_) => StepError::Failed { step: spec.id.clone(), message: message.clone() },
        };
        // The work's own refusal (a tool's "no such file") is an answer, not an outage:
        // only what the policy gave up on is worth running again later.
        let outage = !matches!(&gave_up, GaveUp::Failed(e) if !e.transient);
        if outage || letter.recover.is_none() {
            self.dead_letter(&spec, letter.work, &err, at.attempts).await;
        }
        let Some(recover) = letter.recover else {
            return Err(self.fail(&spec, Arc::from(""), at, err));
        };
        let text = recover(&message);
        let mut reply = StepReply::new(text.clone());
        reply.outcome.model = Arc::from("");
        reply.outcome.finish_reason = Some(gave_up.kind().into());
        self.complete(&spec, at, hash, reply).await?;
        decode(&spec.id, &text)
    }
}

fn decode<T: DeserializeOwned>(step: &StepId, text: &str) -> Result<T, StepError> {
    serde_json::from_str::<T>(text).map_err(|e| StepError::Failed {
        step: step.clone(),
        message: format!("recorded output does not decode: {e}"),
    })
}

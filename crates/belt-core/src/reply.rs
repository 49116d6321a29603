//! What a step produced, in one shape from the provider's reply to the run's result.
//!
//! [`StepReply`] is what a pattern gets back from [`crate::Ctx::llm`]: the text and what
//! came with it. Its [`StepOutcome`] — the model that answered, the tokens, the cost, the
//! time and attempts, and whether the output was replayed or cached — is built once when
//! the step ends and carried whole into the step's record ([`crate::store::StepRecord`]),
//! its `step_completed` event and its [`crate::AgentRecord`] in the run's result. No layer
//! copies it field by field, so a new figure is added in one place.
//!
//! The outcome serializes *flat* (`model`, `input_tokens`, `cost_usd`, … beside the
//! fields of whatever holds it), which is the wire shape events and results had before
//! the type existed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::llm::ToolCall;
use crate::usage::Usage;

/// What one step's work came to. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The model that answered (`provider/model`; empty for steps that are not calls).
    #[serde(default)]
    pub model: Arc<str>,
    #[serde(flatten)]
    pub usage: Usage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    /// The output came from the run's record (resume) instead of a new call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// The output came from the response cache (and cost nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// What the provider reported when it was more than the request allowed (input above
    /// [`crate::llm::LlmRequest::input_token_bound`] or output above `max_tokens`). `usage`
    /// and `cost_usd` are then what the call was booked at: the reported figures cut to
    /// the request's limits, so the budget's reservation is never exceeded. Boxed: rare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_usage: Option<Box<Usage>>,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, …), so a replayed step tells
    /// a pattern what the original call did, and a reply cut off by its token cap
    /// (`length`) shows as truncated in the result and the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<Arc<str>>,
    /// The answering model has no known price: `cost_usd` is then unknown, not 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpriced: bool,
    /// Of `duration_ms`, the milliseconds its attempts waited for the provider's limits
    /// (a concurrent slot, requests or tokens per minute, a 429 pause, an open breaker).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit_wait_ms: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StepOutcome {
    /// The model stopped at its token cap: the output is cut off.
    pub fn truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }

    /// The outcome of a step that has not produced anything (yet): its model, no usage.
    pub fn of(model: Arc<str>) -> StepOutcome {
        StepOutcome { model, ..StepOutcome::default() }
    }
}

/// A provider's `finish_reason` as the outcome keeps it: the common ones (`stop`, `length`,
/// `tool_calls`) are one shared string each rather than an allocation in every step's
/// record (32 bytes each, held by the run's result until it ends).
pub(crate) fn finish_reason(reason: String) -> Arc<str> {
    static COMMON: std::sync::OnceLock<[Arc<str>; 3]> = std::sync::OnceLock::new();
    let common = COMMON.get_or_init(|| [Arc::from("stop"), Arc::from("length"), Arc::from("tool_calls")]);
    common.iter().find(|c| ***c == *reason).cloned().unwrap_or_else(|| Arc::from(reason))
}

/// What a step produced: its text, what it cost and how it was made. Text and model are
/// shared, so the output is stored once however many records and events refer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReply {
    pub text: Arc<str>,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    #[serde(default)]
    pub simulated: bool,
    /// Tools the model called (see [`crate::Ctx::llm_with_tools`], which runs them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl StepReply {
    /// A reply of `text` with nothing else known yet (the engine fills the outcome in).
    pub fn new(text: impl Into<Arc<str>>) -> StepReply {
        StepReply {
            text: text.into(),
            outcome: StepOutcome::default(),
            simulated: false,
            tool_calls: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_finish_reasons_are_shared_and_others_kept() {
        let (a, b) = (finish_reason("length".into()), finish_reason("length".into()));
        assert!(Arc::ptr_eq(&a, &b), "one `length` for every step");
        assert_eq!(&*finish_reason("content_filter".into()), "content_filter");
    }

    #[test]
    fn an_outcome_serializes_flat_and_reads_replies_cached_before_it_existed() {
        let mut reply = StepReply::new("hi");
        reply.outcome =
            StepOutcome { model: Arc::from("m/x"), usage: Usage::new(3, 4), ..Default::default() };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["model"], "m/x");
        assert_eq!(json["input_tokens"], 3);
        assert!(json.get("replayed").is_none(), "false flags are left out: {json}");
        // The response cache's entries of earlier versions nested their usage.
        let old =
            r#"{"text":"t","model":"m/x","usage":{"input_tokens":1,"output_tokens":2},"simulated":true}"#;
        let read: StepReply = serde_json::from_str(old).unwrap();
        assert_eq!((&*read.text, &*read.outcome.model, read.simulated), ("t", "m/x", true));
    }
}

//! [`CallHints`]: what the code that wrote a request knows about it, as fields rather than
//! words — the kind of call (a plan, a piece of work, a merge, a verdict), the task, the
//! subtask, how many items a plan should have, which inputs a merge covers.
//!
//! A model never sees them: they are not sent, and not part of a step's input hash (the
//! prompt carries the same facts in words, and rewording a prompt must not change what a
//! resumed run replays). Providers that answer from structure rather than from language —
//! the simulated provider — read them instead of parsing the prompt, so rewording a
//! pattern's prompt cannot change how belt behaves offline.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What kind of call a request is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallKind {
    /// Nothing more is known.
    #[default]
    Other,
    /// A decomposition: a JSON plan of `count` items for `task`.
    Plan,
    /// One piece of work: `subtask` of `task`.
    Work,
    /// A merge of `inputs` into one text on `task`, some of them `missing`.
    Merge,
    /// A verdict on a draft: accepted, or a critique.
    Judge,
    /// A program for `task` in the language named by `subtask` (`python`, `sh`), in one
    /// fenced code block.
    Code,
}

/// See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallHints {
    #[serde(default)]
    pub kind: CallKind,
    /// The run's task (or the part of it this call is about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Arc<str>>,
    /// The subtask a [`CallKind::Work`] call does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<Arc<str>>,
    /// How many items a [`CallKind::Plan`] asks for (the most, with `min_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The fewest items a [`CallKind::Plan`] may hold, when the model chooses how many
    /// (`min_count..=count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<usize>,
    /// The names of the inputs a [`CallKind::Merge`] covers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// What a [`CallKind::Merge`] lacks (inputs that failed), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

impl CallHints {
    /// A plan of `count` items for `task`.
    pub fn plan(task: &str, count: usize) -> CallHints {
        CallHints {
            kind: CallKind::Plan,
            task: Some(Arc::from(task)),
            count: Some(count),
            ..CallHints::default()
        }
    }

    /// A plan of `min..=max` items for `task`: the model chooses how many.
    pub fn plan_between(task: &str, min: usize, max: usize) -> CallHints {
        CallHints { min_count: Some(min.min(max)), ..CallHints::plan(task, max) }
    }

    /// The work on `subtask` of `task`.
    pub fn work(task: &str, subtask: &str) -> CallHints {
        CallHints {
            kind: CallKind::Work,
            task: Some(Arc::from(task)),
            subtask: Some(Arc::from(subtask)),
            ..CallHints::default()
        }
    }

    /// A merge of `inputs` on `task`; `missing` names what failed, if anything did.
    pub fn merge(task: &str, inputs: Vec<String>, missing: Option<String>) -> CallHints {
        CallHints {
            kind: CallKind::Merge,
            task: Some(Arc::from(task)),
            inputs,
            missing,
            ..CallHints::default()
        }
    }

    /// A program in `language` that does `task`.
    pub fn code(task: &str, language: &str) -> CallHints {
        CallHints {
            kind: CallKind::Code,
            task: Some(Arc::from(task)),
            subtask: Some(Arc::from(language)),
            ..CallHints::default()
        }
    }

    /// A verdict on a draft.
    pub fn judge() -> CallHints {
        CallHints { kind: CallKind::Judge, ..CallHints::default() }
    }
}

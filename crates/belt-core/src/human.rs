//! The run's channel to people: questions ([`Question`]) asked on the run's side
//! ([`Human`]) arrive on the people's side ([`Requests`]), with ids, timeouts and defaults.
//!
//! This is the engine's half of human in the loop: the run holds a [`Human`] (see
//! [`crate::RunOptions::human`]) and reviews its plan through it. Asking as a recorded step
//! (`Human::approve`, `select`, `input`) is the pattern's half, in
//! [`crate::patterns::hitl`], which re-exports everything here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::step::StepId;

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    Approval,
    Select { options: Vec<String> },
    Input,
}

/// An answer to a [`HumanRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// To an approval.
    Approve(bool),
    /// To a selection: the 0-based index of the option chosen.
    Select(usize),
    /// To an input.
    Text(String),
}

/// A question for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct HumanRequest {
    /// Stable and unique: `{run id}:hitl/{name}`.
    pub id: String,
    pub step: StepId,
    pub question: Question,
    pub prompt: String,
    pub timeout: Duration,
    /// What is taken when no answer comes in time.
    pub default: Answer,
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    Human,
    /// Nobody answered in time: the default.
    Timeout,
    /// Nobody was listening: the default, at once.
    Unattended,
}

impl AnsweredBy {
    /// The name as in JSON: `human`, `timeout`, `unattended`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnsweredBy::Human => "human",
            AnsweredBy::Timeout => "timeout",
            AnsweredBy::Unattended => "unattended",
        }
    }
}

/// The outcome of a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision<T> {
    pub id: String,
    pub value: T,
    pub by: AnsweredBy,
}

/// An answer that was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HitlError {
    #[error("no open request has the id `{id}`; open requests: {}", if .open.is_empty() { "none".to_string() } else { .open.join(", ") })]
    UnknownRequest { id: String, open: Vec<String> },
    #[error("request `{id}` is no longer open (it was answered or timed out)")]
    NotOpen { id: String },
    #[error("request `{id}` cannot take that answer: {reason}")]
    InvalidAnswer { id: String, reason: String },
}

struct Pending {
    question: Question,
    tx: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Desk {
    open: HashMap<String, Pending>,
    /// Open once, not any more: answered or timed out.
    closed: HashSet<String>,
}

/// The run's side: asks questions (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Human {
    desk: Arc<Mutex<Desk>>,
    tx: Option<mpsc::UnboundedSender<HumanRequest>>,
    /// No question waits longer than this, whatever timeout it asks for.
    pub(crate) max_wait: Option<Duration>,
}

/// The people's side: receives the questions and answers them.
pub struct Requests {
    rx: mpsc::UnboundedReceiver<HumanRequest>,
    human: Human,
}

/// A connected pair: questions asked on [`Human`] arrive on [`Requests`].
pub fn channel() -> (Human, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    let human = Human { desk: Arc::new(Mutex::new(Desk::default())), tx: Some(tx), max_wait: None };
    (human.clone(), Requests { rx, human })
}

impl Requests {
    /// The next question; `None` once every [`Human`] is gone.
    pub async fn recv(&mut self) -> Option<HumanRequest> {
        self.rx.recv().await
    }

    /// Answer request `id`.
    pub fn answer(&self, id: &str, answer: Answer) -> Result<(), HitlError> {
        self.human.answer(id, answer)
    }
}

impl Human {
    /// Nobody to ask: every question takes its default at once (unattended runs).
    pub fn unattended() -> Human {
        Human { desk: Arc::new(Mutex::new(Desk::default())), tx: None, max_wait: None }
    }

    /// Wait at most `limit` for any answer, then take the question's default (the CLI's
    /// `--hitl-timeout`): a person away from the terminal does not hold the run up longer.
    pub fn max_wait(mut self, limit: Duration) -> Human {
        self.max_wait = Some(limit);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.desk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of the open requests, sorted.
    pub fn open(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().open.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Answer request `id` (see the module docs for what is refused).
    pub fn answer(&self, id: &str, answer: Answer) -> Result<(), HitlError> {
        let mut desk = self.lock();
        let Some(pending) = desk.open.get(id) else {
            if desk.closed.contains(id) {
                return Err(HitlError::NotOpen { id: id.to_string() });
            }
            let mut open: Vec<String> = desk.open.keys().cloned().collect();
            open.sort();
            return Err(HitlError::UnknownRequest { id: id.to_string(), open });
        };
        check(&pending.question, &answer)
            .map_err(|reason| HitlError::InvalidAnswer { id: id.to_string(), reason })?;
        let pending = desk.open.remove(id).expect("just found");
        desk.closed.insert(id.to_string());
        // The asker may have timed out in the meantime; then the default stands.
        let _ = pending.tx.send(answer);
        Ok(())
    }

    /// Put `request` to the people and wait for an answer, its timeout or its default.
    pub(crate) async fn wait(&self, request: HumanRequest) -> Result<Decision<Answer>, String> {
        let id = request.id.clone();
        let default = request.default.clone();
        let decided = |value, by| Decision { id: id.clone(), value, by };
        let Some(tx) = &self.tx else { return Ok(decided(default, AnsweredBy::Unattended)) };
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut desk = self.lock();
            if desk.open.contains_key(&id) {
                return Err(format!(
                    "a request with the id `{id}` is already open; give each question its own name"
                ));
            }
            desk.open.insert(id.clone(), Pending { question: request.question.clone(), tx: answer_tx });
        }
        // Closed either way once this ends: answered, timed out, or dropped with the run.
        let _close = Close { human: self, id: &id };
        let timeout = request.timeout;
        if tx.send(request).is_err() {
            return Ok(decided(default, AnsweredBy::Unattended));
        }
        match tokio::time::timeout(timeout, answer_rx).await {
            Ok(Ok(answer)) => Ok(decided(answer, AnsweredBy::Human)),
            // Timed out, or the desk was dropped: the default.
            Ok(Err(_)) | Err(_) => Ok(decided(default, AnsweredBy::Timeout)),
        }
    }
}

/// Removes a request from the open ones when its asker is done with it.
struct Close<'a> {
    human: &'a Human,
    id: &'a str,
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        let mut desk = self.human.lock();
        if desk.open.remove(self.id).is_some() {
            desk.closed.insert(self.id.to_string());
        }
    }
}

fn check(question: &Question, answer: &Answer) -> Result<(), String> {
    match (question, answer) {
        (Question::Approval, Answer::Approve(_)) | (Question::Input, Answer::Text(_)) => Ok(()),
        (Question::Select { options }, Answer::Select(i)) if *i < options.len() => Ok(()),
        (Question::Select { options }, Answer::Select(i)) => {
            Err(format!("option {i} does not exist; choose 0 to {}", options.len().saturating_sub(1)))
        }
        (q, a) => Err(format!("a {} needs {}, not {a:?}", q.name(), q.expects())),
    }
}

impl Question {
    fn name(&self) -> &'static str {
        match self {
            Question::Approval => "approval",
            Question::Select { .. } => "selection",
            Question::Input => "input",
        }
    }

    fn expects(&self) -> &'static str {
        match self {
            Question::Approval => "Answer::Approve",
            Question::Select { .. } => "Answer::Select",
            Question::Input => "Answer::Text",
        }
    }
}

//! Human in the loop: approval, selection among options, and free input, over channels.
//!
//! [`channel`] gives the run's side, [`Human`], and the people's side, [`Requests`] (a
//! terminal prompt, a web form, a chat bot…). A pattern asks with [`Human::approve`],
//! [`Human::select`] or [`Human::input`]; each question becomes a [`HumanRequest`] on the
//! `Requests` side, with
//! - a **stable, unique id** `{run id}:hitl/{name}`: the same after a resume, different in
//!   every run. Two questions with the same name open at once are an error.
//! - a **timeout** and a **default**: with no answer in time, the default is taken and the
//!   [`Decision`] says so ([`AnsweredBy::Timeout`]). With nobody listening (the `Requests`
//!   side dropped, or [`Human::unattended`]) the default is taken at once.
//!
//! Several requests can be open at once and answered in any order, with
//! [`Human::answer`] (or [`Requests::answer`]): an unknown id is an error that lists the
//! open ones, an id whose request has ended says so, and an answer of the wrong kind (text
//! for an approval, an option out of range) is refused and leaves the request open.
//!
//! Each question is a recorded step, `hitl/{name}`: once answered, a resumed run gets the
//! recorded decision instead of asking again.
//!
//! ```
//! use std::time::Duration;
//! use belt_core::patterns::hitl::{self, Answer};
//! let (human, mut requests) = hitl::channel();
//! // In the run:  let go = human.approve(&ctx, "deploy", "Ship v2?", Duration::from_secs(600), false).await?;
//! // Elsewhere:   let r = requests.recv().await.unwrap(); requests.answer(&r.id, Answer::Approve(true))?;
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::ctx::{Ctx, StepError};
use crate::step::{StepId, StepSpec, Tier};

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

/// The outcome of a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision<T> {
    pub id: String,
    pub value: T,
    pub by: AnsweredBy,
}

/// An answer that was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    max_wait: Option<Duration>,
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

    /// Ask for an approval.
    pub async fn approve(
        &self,
        ctx: &Ctx,
        name: &str,
        prompt: impl Into<String>,
        timeout: Duration,
        default: bool,
    ) -> Result<Decision<bool>, StepError> {
        let d =
            self.ask(ctx, name, Question::Approval, prompt.into(), timeout, Answer::Approve(default)).await?;
        Ok(Decision { id: d.id, value: matches!(d.value, Answer::Approve(true)), by: d.by })
    }

    /// Ask to choose one of `options`; the value is the chosen index.
    pub async fn select(
        &self,
        ctx: &Ctx,
        name: &str,
        prompt: impl Into<String>,
        options: Vec<String>,
        timeout: Duration,
        default: usize,
    ) -> Result<Decision<usize>, StepError> {
        if default >= options.len() {
            let message = format!("default option {default} is out of range: {} option(s)", options.len());
            return Err(StepError::Failed { step: self.step(name), message });
        }
        let question = Question::Select { options };
        let d = self.ask(ctx, name, question, prompt.into(), timeout, Answer::Select(default)).await?;
        let value = if let Answer::Select(i) = d.value { i } else { default };
        Ok(Decision { id: d.id, value, by: d.by })
    }

    /// Ask for free text.
    pub async fn input(
        &self,
        ctx: &Ctx,
        name: &str,
        prompt: impl Into<String>,
        timeout: Duration,
        default: impl Into<String>,
    ) -> Result<Decision<String>, StepError> {
        let default = default.into();
        let d = self
            .ask(ctx, name, Question::Input, prompt.into(), timeout, Answer::Text(default.clone()))
            .await?;
        let value = if let Answer::Text(t) = d.value { t } else { default };
        Ok(Decision { id: d.id, value, by: d.by })
    }

    fn step(&self, name: &str) -> StepId {
        StepId::new(format!("hitl/{name}"))
    }

    /// Ask, as the recorded step `hitl/{name}`.
    async fn ask(
        &self,
        ctx: &Ctx,
        name: &str,
        question: Question,
        prompt: String,
        timeout: Duration,
        default: Answer,
    ) -> Result<Decision<Answer>, StepError> {
        let step = self.step(name);
        let id = format!("{}:{step}", ctx.run_id());
        let spec = StepSpec::new(step.clone(), Tier::Custom(Arc::from("human")));
        // What the step is keyed by: a resumed run that asks something else is told so.
        let timeout = self.max_wait.map_or(timeout, |limit| timeout.min(limit));
        let request = HumanRequest { id: id.clone(), step, question, prompt, timeout, default };
        let input = (&request.question, &request.prompt, &request.default);
        ctx.step(spec, &input, self.wait(request.clone())).await
    }

    async fn wait(&self, request: HumanRequest) -> Result<Decision<Answer>, String> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::patterns::testkit::{record, within};
    use crate::testing::ScriptedProvider;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn an_approval_is_answered_and_recorded() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = channel();
        let person = tokio::spawn(async move {
            let r = requests.recv().await.unwrap();
            assert_eq!(r.question, Question::Approval);
            assert_eq!(r.prompt, "Ship it?");
            assert!(r.id.ends_with(":hitl/ship"), "{}", r.id);
            requests.answer(&r.id, Answer::Approve(true)).unwrap();
            r.id
        });
        let (decision, result) =
            within(&p, move |ctx| async move { human.approve(&ctx, "ship", "Ship it?", LONG, false).await })
                .await;
        let decision = decision.unwrap();
        assert!(decision.value);
        assert_eq!(decision.by, AnsweredBy::Human);
        assert_eq!(decision.id, person.await.unwrap());
        assert_eq!(decision.id, format!("{}:hitl/ship", result.run_id), "stable: the run id and the step");
        let rec = record(&result, "hitl/ship");
        assert!(rec.output.as_deref().unwrap().contains("\"approve\":true"), "{:?}", rec.output);
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_in_time_takes_the_default() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = channel();
        let (out, _) = within(&p, move |ctx| async move {
            let seen = tokio::spawn(async move { requests.recv().await.map(|r| (r.timeout, r.default)) });
            let d = human
                .select(&ctx, "pick", "Which?", vec!["a".into(), "b".into()], Duration::from_secs(30), 1)
                .await;
            (d, seen.await.unwrap(), human.open())
        })
        .await;
        let d = out.0.unwrap();
        assert_eq!((d.value, d.by), (1, AnsweredBy::Timeout));
        assert_eq!(out.1, Some((Duration::from_secs(30), Answer::Select(1))));
        assert!(out.2.is_empty(), "a timed-out request is no longer open");
    }

    #[tokio::test]
    async fn several_open_requests_are_answered_in_any_order() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = channel();
        let person = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(requests.recv().await.unwrap());
            }
            // Answer in reverse order of arrival.
            for r in got.iter().rev() {
                let answer = match &r.question {
                    Question::Approval => Answer::Approve(false),
                    Question::Select { .. } => Answer::Select(2),
                    Question::Input => Answer::Text(format!("text for {}", r.step)),
                };
                requests.answer(&r.id, answer).unwrap();
            }
        });
        let (out, _) = within(&p, move |ctx| async move {
            let options = vec!["x".into(), "y".into(), "z".into()];
            tokio::join!(
                human.approve(&ctx, "a", "A?", LONG, true),
                human.select(&ctx, "b", "B?", options, LONG, 0),
                human.input(&ctx, "c", "C?", LONG, "none"),
            )
        })
        .await;
        person.await.unwrap();
        assert!(!out.0.unwrap().value);
        assert_eq!(out.1.unwrap().value, 2);
        assert_eq!(out.2.unwrap().value, "text for hitl/c");
    }

    #[tokio::test]
    async fn unknown_closed_and_invalid_answers_are_errors() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = channel();
        let person = tokio::spawn(async move {
            let r = requests.recv().await.unwrap();
            let unknown = requests.answer("nope", Answer::Select(0)).unwrap_err();
            assert_eq!(unknown, HitlError::UnknownRequest { id: "nope".into(), open: vec![r.id.clone()] });
            assert!(unknown.to_string().starts_with("no open request has the id `nope`; open requests: "));
            let out_of_range = requests.answer(&r.id, Answer::Select(5)).unwrap_err();
            assert_eq!(
                out_of_range.to_string(),
                format!("request `{}` cannot take that answer: option 5 does not exist; choose 0 to 1", r.id)
            );
            let wrong_kind = requests.answer(&r.id, Answer::Text("b".into())).unwrap_err();
            assert!(matches!(wrong_kind, HitlError::InvalidAnswer { .. }));
            // Still open after the refusals.
            requests.answer(&r.id, Answer::Select(1)).unwrap();
            assert_eq!(
                requests.answer(&r.id, Answer::Select(0)),
                Err(HitlError::NotOpen { id: r.id.clone() })
            );
        });
        let (d, _) = within(&p, move |ctx| async move {
            human.select(&ctx, "pick", "Which?", vec!["a".into(), "b".into()], LONG, 0).await
        })
        .await;
        person.await.unwrap();
        assert_eq!(d.unwrap().value, 1);
    }

    #[tokio::test]
    async fn a_resumed_run_gets_the_recorded_answer_without_asking_again() {
        use crate::patterns::testkit::{options, within_options};
        use crate::store::{MemoryStore, RunStore};
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let p = Arc::new(ScriptedProvider::new("t"));
        let resumable = || {
            let mut o = options(&p).with_store(store.clone());
            o.run_id = Some("run-7".into());
            o
        };
        let (human, mut requests) = channel();
        tokio::spawn(async move {
            let r = requests.recv().await.unwrap();
            requests.answer(&r.id, Answer::Text("from a person".into())).unwrap();
        });
        let ask = |human: Human| {
            move |ctx: Ctx| async move { human.input(&ctx, "title", "Title?", LONG, "default").await.unwrap() }
        };
        let (first, _) = within_options(resumable(), ask(human)).await;
        assert_eq!((first.value.as_str(), first.by), ("from a person", AnsweredBy::Human));
        // Resumed with nobody to ask: the recorded answer, not the default.
        let (again, result) = within_options(resumable(), ask(Human::unattended())).await;
        assert_eq!(again, first);
        assert_eq!(again.id, "run-7:hitl/title");
        assert!(record(&result, "hitl/title").replayed);
    }

    #[tokio::test]
    async fn unattended_takes_every_default_at_once() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (out, _) = within(&p, move |ctx| async move {
            let human = Human::unattended();
            let a = human.approve(&ctx, "a", "A?", LONG, true).await.unwrap();
            let (dropped, requests) = channel();
            drop(requests);
            let b = dropped.input(&ctx, "b", "B?", LONG, "fallback").await.unwrap();
            (a, b)
        })
        .await;
        assert_eq!((out.0.value, out.0.by), (true, AnsweredBy::Unattended));
        assert_eq!((out.1.value.as_str(), out.1.by), ("fallback", AnsweredBy::Unattended));
    }
}

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

use std::sync::Arc;
use std::time::Duration;

pub use crate::human::*;

use crate::ctx::{Ctx, StepError};
use crate::event::EventKind;
use crate::step::{StepId, StepSpec, Tier};

/// Asking as a recorded step: the pattern's half of [`Human`].
impl Human {
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
        ctx.step(spec, &input, self.wait_said(ctx, request.clone())).await
    }

    /// [`Human::wait`], said in the run's events: `human_requested` when the question opens,
    /// `human_answered` when it closes (so webhooks and SSE subscribers need not poll). A
    /// resumed run replays the recorded decision without either: nothing is asked again.
    async fn wait_said(&self, ctx: &Ctx, request: HumanRequest) -> Result<Decision<Answer>, String> {
        let step = request.step.clone();
        // A second question under an open id is refused by `wait`: it opens nothing.
        let opens = !self.open().contains(&request.id);
        if opens {
            ctx.emit_event(
                Some(&step),
                EventKind::HumanRequested {
                    id: request.id.clone(),
                    question: Box::new(request.question.clone()),
                    prompt: request.prompt.clone(),
                    timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
                    default: Box::new(request.default.clone()),
                },
            );
        }
        let decision = self.wait(request).await?;
        ctx.emit_event(
            Some(&step),
            EventKind::HumanAnswered {
                id: decision.id.clone(),
                answer: Box::new(decision.value.clone()),
                by: decision.by,
            },
        );
        Ok(decision)
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
        assert!(record(&result, "hitl/title").outcome.replayed);
        // The question opened and closed once, in events, with its id, prompt and answer; the
        // resumed run asked nothing, so it said nothing of it.
        let events = store.events("run-7", 0).await.unwrap();
        let human: Vec<&EventKind> = events
            .iter()
            .map(|e| &e.kind)
            .filter(|k| matches!(k, EventKind::HumanRequested { .. } | EventKind::HumanAnswered { .. }))
            .collect();
        assert_eq!(human.len(), 2, "{human:?}");
        match human[0] {
            EventKind::HumanRequested { id, question, prompt, timeout_ms, default } => {
                assert_eq!((id.as_str(), prompt.as_str()), ("run-7:hitl/title", "Title?"));
                assert_eq!((&**question, *timeout_ms), (&Question::Input, LONG.as_millis() as u64));
                assert_eq!(**default, Answer::Text("default".into()));
            }
            other => panic!("{other:?}"),
        }
        match human[1] {
            EventKind::HumanAnswered { id, answer, by } => {
                assert_eq!(id, "run-7:hitl/title");
                assert_eq!((&**answer, *by), (&Answer::Text("from a person".into()), AnsweredBy::Human));
            }
            other => panic!("{other:?}"),
        }
        let step = events.iter().find(|e| e.kind.type_name() == "human_requested").unwrap().step.clone();
        assert_eq!(step.unwrap().as_str(), "hitl/title");
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

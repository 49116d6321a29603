//! The spec's `approve_all`: questions for people answered at once, the same way on every
//! front end (the CLI also says each answer on the terminal).

use std::time::Duration;

use belt_core::patterns::Human;
use belt_core::patterns::hitl::{self, Answer, HumanRequest, Question};

/// The answer `approve_all` gives: every approval granted, every other question its default.
pub fn unattended_answer(request: &HumanRequest) -> Answer {
    match request.question {
        Question::Approval => Answer::Approve(true),
        _ => request.default.clone(),
    }
}

/// A human channel that answers as `approve_all` does, at once. Spawns its answering task
/// on the current tokio runtime; it ends with the run.
pub fn approve_all(max_wait: Option<u64>) -> Human {
    let (human, mut requests) = hitl::channel();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let _ = requests.answer(&request.id, unattended_answer(&request));
        }
    });
    with_max_wait(human, max_wait)
}

/// `human`, waiting at most `seconds` (the spec's `hitl_timeout`) for any answer.
pub fn with_max_wait(human: Human, seconds: Option<u64>) -> Human {
    match seconds {
        Some(s) => human.max_wait(Duration::from_secs(s)),
        None => human,
    }
}

//! Questions a run asks people ([`belt_core::patterns::hitl`]), answered on the terminal.
//!
//! Three ways, chosen once per run:
//! - `--approve-all`: every approval is granted at once and every other question takes its
//!   default at once — for unattended runs that were reviewed beforehand;
//! - a terminal on stdin and stderr: each question is asked there in turn, the progress
//!   bars hidden meanwhile; an empty line takes the default, and with no answer within the
//!   question's timeout (capped by `--hitl-timeout`) the default is taken;
//! - otherwise nobody can answer, and every question takes its default at once.
//!
//! Every decision is a recorded step (`hitl/NAME`), so a resumed run does not ask again.

use std::io::{BufRead, IsTerminal};

use belt_core::patterns::Human;
use belt_core::patterns::hitl::{self, Answer, HumanRequest, Question, Requests};
use indicatif::{MultiProgress, ProgressDrawTarget};
use tokio::sync::mpsc;

/// The run's side of the questions and, when someone can answer, the answering side.
pub struct Questions {
    human: Human,
    requests: Option<Requests>,
    approve_all: bool,
}

impl Questions {
    /// `approve_all` and `hitl_timeout` as a run's spec sets them.
    pub fn new(approve_all: bool, hitl_timeout: Option<u64>) -> Questions {
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if !approve_all && !interactive {
            return Questions { human: Human::unattended(), requests: None, approve_all: false };
        }
        let (human, requests) = hitl::channel();
        let human = belt_app::hitl::with_max_wait(human, hitl_timeout);
        Questions { human, requests: Some(requests), approve_all }
    }

    /// True when no one can answer: every question takes its default at once.
    pub fn unanswered(&self) -> bool {
        self.requests.is_none()
    }

    /// What the run asks through ([`belt_core::RunOptions::human`]).
    pub fn human(&self) -> Human {
        self.human.clone()
    }

    /// Answer the run's questions until it ends. `bars` are hidden while a question is on
    /// the terminal.
    pub fn spawn(self, bars: Option<MultiProgress>) {
        let Some(mut requests) = self.requests else { return };
        let human = self.human;
        let approve_all = self.approve_all;
        tokio::spawn(async move {
            let mut lines: Option<mpsc::UnboundedReceiver<String>> = None;
            while let Some(request) = requests.recv().await {
                if approve_all {
                    let answer = belt_app::hitl::unattended_answer(&request);
                    eprintln!(
                        "belt: {} answered by --approve-all: {}",
                        request.step,
                        describe(&request, &answer)
                    );
                    let _ = requests.answer(&request.id, answer);
                    continue;
                }
                // Asked while another question was on screen, it may have timed out since.
                if !human.open().contains(&request.id) {
                    continue;
                }
                let lines = lines.get_or_insert_with(stdin_lines);
                if let Some(bars) = &bars {
                    bars.set_draw_target(ProgressDrawTarget::hidden());
                }
                ask(&requests, &request, lines).await;
                if let Some(bars) = &bars {
                    bars.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
                }
            }
        });
    }
}

/// Lines typed on stdin, read on a thread of their own (a read cannot be abandoned when a
/// question times out, so one reader serves every question).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Ask one question on the terminal until it gets a valid answer or times out.
async fn ask(requests: &Requests, request: &HumanRequest, lines: &mut mpsc::UnboundedReceiver<String>) {
    eprintln!("\n── belt asks ({}) ──\n{}", request.step, request.prompt.trim_end());
    if let Question::Select { options } = &request.question {
        for (i, o) in options.iter().enumerate() {
            eprintln!("  {}) {o}", i + 1);
        }
    }
    let deadline = tokio::time::Instant::now() + request.timeout;
    loop {
        eprint!("{} ", hint(request));
        let line = tokio::select! {
            line = lines.recv() => line,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(line) = line else {
            eprintln!(
                "\nbelt: no answer in time; taking the default: {}",
                describe(request, &request.default)
            );
            return;
        };
        let answer = match parse(request, line.trim()) {
            Ok(answer) => answer,
            Err(problem) => {
                eprintln!("{problem}");
                continue;
            }
        };
        match requests.answer(&request.id, answer.clone()) {
            Ok(()) => eprintln!("belt: answered: {}", describe(request, &answer)),
            Err(e) => eprintln!("belt: {e}"),
        }
        return;
    }
}

/// The prompt's last line: what to type, and the default.
fn hint(request: &HumanRequest) -> String {
    let secs = request.timeout.as_secs();
    match (&request.question, &request.default) {
        (Question::Approval, Answer::Approve(true)) => format!("Approve? [Y/n] ({secs}s)"),
        (Question::Approval, _) => format!("Approve? [y/N] ({secs}s)"),
        (Question::Select { options }, Answer::Select(d)) => {
            format!("Choose 1-{} [default {}] ({secs}s)", options.len(), d + 1)
        }
        (_, default) => format!("Answer [default: {}] ({secs}s)", describe(request, default)),
    }
}

/// A typed line as an answer to `request`; an empty line is the default.
pub fn parse(request: &HumanRequest, line: &str) -> Result<Answer, String> {
    if line.is_empty() {
        return Ok(request.default.clone());
    }
    match &request.question {
        Question::Approval => match line.to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(Answer::Approve(true)),
            "n" | "no" => Ok(Answer::Approve(false)),
            _ => Err(format!("`{line}`: answer y or n (an empty line takes the default)")),
        },
        Question::Select { options } => match line.parse::<usize>() {
            Ok(k) if (1..=options.len()).contains(&k) => Ok(Answer::Select(k - 1)),
            _ => Err(format!("`{line}`: type a number from 1 to {}", options.len())),
        },
        Question::Input => Ok(Answer::Text(line.to_string())),
    }
}

/// An answer in words: "yes", "2) Staging", the text.
fn describe(request: &HumanRequest, answer: &Answer) -> String {
    match (answer, &request.question) {
        (Answer::Approve(true), _) => "yes".into(),
        (Answer::Approve(false), _) => "no".into(),
        (Answer::Select(i), Question::Select { options }) => {
            format!("{}) {}", i + 1, options.get(*i).map_or("?", String::as_str))
        }
        (Answer::Select(i), _) => format!("option {}", i + 1),
        (Answer::Text(t), _) => format!("\"{t}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use belt_core::StepId;
    use std::time::Duration;

    fn request(question: Question, default: Answer) -> HumanRequest {
        HumanRequest {
            id: "r:hitl/x".into(),
            step: StepId::new("hitl/x"),
            question,
            prompt: "?".into(),
            timeout: Duration::from_secs(5),
            default,
        }
    }

    #[test]
    fn typed_lines_become_answers_and_empty_lines_defaults() {
        let approval = request(Question::Approval, Answer::Approve(false));
        assert_eq!(parse(&approval, "Y"), Ok(Answer::Approve(true)));
        assert_eq!(parse(&approval, "no"), Ok(Answer::Approve(false)));
        assert_eq!(parse(&approval, ""), Ok(Answer::Approve(false)));
        assert!(parse(&approval, "maybe").unwrap_err().contains("answer y or n"));

        let select = request(Question::Select { options: vec!["a".into(), "b".into()] }, Answer::Select(1));
        assert_eq!(parse(&select, "1"), Ok(Answer::Select(0)));
        assert_eq!(parse(&select, ""), Ok(Answer::Select(1)));
        assert!(parse(&select, "3").unwrap_err().contains("from 1 to 2"));
        assert_eq!(hint(&select), "Choose 1-2 [default 2] (5s)");

        let input = request(Question::Input, Answer::Text("none".into()));
        assert_eq!(parse(&input, "hello"), Ok(Answer::Text("hello".into())));
        assert_eq!(describe(&input, &Answer::Text("x".into())), "\"x\"");
    }
}

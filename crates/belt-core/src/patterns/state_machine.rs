//! State machine: states, guarded transitions with actions, and a recorded history.
//!
//! A [`StateMachine`] declares transitions `from -> to`, each with an optional guard (a
//! named predicate on the machine's data) and an optional action (an [`Agent`] whose output
//! becomes the data). A [`Machine`] is one execution: its current state, its data (text),
//! and the history of the transitions it took.
//!
//! - [`Machine::go`] takes the transition to a given state. No such transition from the
//!   current state, or a guard that refuses, is an error naming both states (and the
//!   states that can be reached, or the guard); the machine stays where it was.
//! - [`Machine::run`] moves by itself: from each state it takes the first transition, in
//!   declaration order, whose guard holds, until a final state. It stops with an error if
//!   none holds.
//!
//! A machine takes at most `max_transitions` (default 100) transitions in all; the next one
//! is refused with a [`CapHit`], recorded in the run as its skipped step.
//!
//! The action of the `n`-th transition runs as step `{scope}/{nnn}-{from}-{to}`
//! (`order/003-review-approved`), so a resumed run replays the same path.
//!
//! ```
//! use belt_core::patterns::{Agent, state_machine::{StateMachine, Transition}};
//! let order = StateMachine::new("order", "draft")
//!     .transition(Transition::new("draft", "review").guard("has text", |d| !d.trim().is_empty()))
//!     .transition(Transition::new("review", "approved").action(Agent::llm("simulated/default", "Approve.")))
//!     .transition(Transition::new("review", "draft"))
//!     .final_state("approved");
//! // let mut m = order.start("Two chairs"); m.go(&ctx, "review").await?; m.run(&ctx).await?;
//! ```

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, pad};
use crate::step::{StepId, StepSpec, Tier};

type Guard = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One transition `from -> to`.
#[derive(Clone)]
pub struct Transition {
    from: String,
    to: String,
    guard: Option<(String, Guard)>,
    action: Option<Agent>,
}

impl Transition {
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Transition {
        Transition { from: from.into(), to: to.into(), guard: None, action: None }
    }

    /// Allowed only when `guard` holds for the machine's data; `name` appears in errors.
    pub fn guard(
        mut self,
        name: impl Into<String>,
        guard: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Transition {
        self.guard = Some((name.into(), Arc::new(guard)));
        self
    }

    /// Run `agent` on the data when taking the transition; its output is the new data.
    pub fn action(mut self, agent: Agent) -> Transition {
        self.action = Some(agent);
        self
    }
}

/// A transition taken.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRecord {
    /// 1-based position in the history.
    pub seq: usize,
    pub from: String,
    pub to: String,
    /// The guard that allowed it, if any.
    pub guard: Option<String>,
    /// The action's step, if it had one.
    pub step: Option<StepId>,
}

/// Why a transition was not taken. The machine stays in `from`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransitionError {
    #[error("no transition from `{from}` to `{to}`; from `{from}` the machine can go to: {}", list(.allowed))]
    Invalid { from: String, to: String, allowed: Vec<String> },
    #[error("guard `{guard}` refused the transition from `{from}` to `{to}`")]
    GuardFailed { from: String, to: String, guard: String },
    #[error("the action of the transition from `{from}` to `{to}` failed: {error}")]
    ActionFailed { from: String, to: String, error: StepError },
    #[error("no transition from `{from}` is allowed (guards refused: {}), and `{from}` is not a final state", list(.refused))]
    Stuck { from: String, refused: Vec<String> },
    #[error("{cap} (in state `{from}`)")]
    Cap { from: String, cap: CapHit },
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "nothing".into() } else { items.join(", ") }
}

/// States and transitions (see the module docs).
#[derive(Clone)]
pub struct StateMachine {
    scope: String,
    initial: String,
    finals: Vec<String>,
    transitions: Vec<Transition>,
    max_transitions: usize,
}

/// Transitions a machine takes at most, unless told otherwise.
pub const DEFAULT_MAX_TRANSITIONS: usize = 100;

impl StateMachine {
    /// A machine whose steps are named under `scope`, starting in `initial`.
    pub fn new(scope: impl Into<String>, initial: impl Into<String>) -> StateMachine {
        StateMachine {
            scope: scope.into(),
            initial: initial.into(),
            finals: Vec::new(),
            transitions: Vec::new(),
            max_transitions: DEFAULT_MAX_TRANSITIONS,
        }
    }

    /// Add a transition; one with the same `from` and `to` as an earlier one replaces it.
    pub fn transition(mut self, t: Transition) -> StateMachine {
        match self.transitions.iter_mut().find(|x| x.from == t.from && x.to == t.to) {
            Some(x) => *x = t,
            None => self.transitions.push(t),
        }
        self
    }

    /// A state where [`Machine::run`] stops.
    pub fn final_state(mut self, state: impl Into<String>) -> StateMachine {
        self.finals.push(state.into());
        self
    }

    /// The most transitions a machine takes in all, by [`Machine::go`] and [`Machine::run`]
    /// (at least 1).
    pub fn max_transitions(mut self, n: usize) -> StateMachine {
        self.max_transitions = n.max(1);
        self
    }

    /// An execution in the initial state, with `data`.
    pub fn start(&self, data: impl Into<Arc<str>>) -> Machine<'_> {
        Machine { def: self, state: self.initial.clone(), data: data.into(), history: Vec::new() }
    }

    fn from<'a, 's>(&'a self, state: &'s str) -> impl Iterator<Item = &'a Transition> + use<'a, 's> {
        self.transitions.iter().filter(move |t| t.from == state)
    }
}

/// One execution of a [`StateMachine`].
pub struct Machine<'a> {
    def: &'a StateMachine,
    state: String,
    data: Arc<str>,
    history: Vec<TransitionRecord>,
}

impl Machine<'_> {
    pub fn state(&self) -> &str {
        &self.state
    }

    pub fn data(&self) -> &Arc<str> {
        &self.data
    }

    /// The transitions taken, in order.
    pub fn history(&self) -> &[TransitionRecord] {
        &self.history
    }

    pub fn is_final(&self) -> bool {
        self.def.finals.contains(&self.state)
    }

    /// Take the transition to `to` (see the module docs).
    pub async fn go(&mut self, ctx: &Ctx, to: &str) -> Result<&TransitionRecord, TransitionError> {
        let def = self.def;
        let Some(t) = def.from(&self.state).find(|t| t.to == to) else {
            return Err(TransitionError::Invalid {
                from: self.state.clone(),
                to: to.to_string(),
                allowed: def.from(&self.state).map(|t| t.to.clone()).collect(),
            });
        };
        if let Some((name, guard)) = &t.guard
            && !guard(&self.data)
        {
            return Err(TransitionError::GuardFailed {
                from: t.from.clone(),
                to: t.to.clone(),
                guard: name.clone(),
            });
        }
        self.take(ctx, t).await
    }

    /// Move along allowed transitions until a final state (see the module docs).
    pub async fn run(&mut self, ctx: &Ctx) -> Result<(), TransitionError> {
        let def = self.def;
        while !self.is_final() {
            let mut refused = Vec::new();
            let mut chosen = None;
            for t in def.from(&self.state) {
                match &t.guard {
                    Some((name, guard)) if !guard(&self.data) => {
                        refused.push(format!("{name} (to `{}`)", t.to))
                    }
                    _ => {
                        chosen = Some(t);
                        break;
                    }
                }
            }
            let Some(t) = chosen else {
                return Err(TransitionError::Stuck { from: self.state.clone(), refused });
            };
            self.take(ctx, t).await?;
        }
        Ok(())
    }

    fn step_id(&self, seq: usize, from: &str, to: &str) -> StepId {
        let seq = pad(seq, self.def.max_transitions, 3);
        StepId::new(format!("{}/{seq}-{from}-{to}", self.def.scope))
    }

    async fn take(&mut self, ctx: &Ctx, t: &Transition) -> Result<&TransitionRecord, TransitionError> {
        let seq = self.history.len() + 1;
        if seq > self.def.max_transitions {
            let next = StepSpec::new(self.step_id(seq, &t.from, &t.to), Tier::Agent);
            let model = t.action.as_ref().map_or("", |a| a.model());
            let cap = CapHit::record(ctx, "max_transitions", self.def.max_transitions, next, model);
            return Err(TransitionError::Cap { from: self.state.clone(), cap });
        }
        let mut step = None;
        if let Some(agent) = &t.action {
            let mut spec = StepSpec::new(self.step_id(seq, &t.from, &t.to), Tier::Agent);
            if let Some(prev) = self.history.iter().rev().find_map(|h| h.step.clone()) {
                spec = spec.inputs(vec![prev]);
            }
            step = Some(spec.id.clone());
            self.data = agent.run(ctx, spec, self.data.clone()).await.map_err(|error| {
                TransitionError::ActionFailed { from: t.from.clone(), to: t.to.clone(), error }
            })?;
        }
        self.history.push(TransitionRecord {
            seq,
            from: t.from.clone(),
            to: t.to.clone(),
            guard: t.guard.as_ref().map(|g| g.0.clone()),
            step,
        });
        self.state = t.to.clone();
        Ok(self.history.last().expect("just pushed"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{record, within};
    use crate::result::AgentStatus;
    use crate::testing::ScriptedProvider;

    fn order() -> StateMachine {
        StateMachine::new("order", "draft")
            .transition(Transition::new("draft", "review").guard("has items", |d| d.contains("item")))
            .transition(
                Transition::new("review", "approved").action(Agent::map(|d| Ok(format!("{d} [approved]")))),
            )
            .transition(Transition::new("review", "draft"))
            .transition(Transition::new("approved", "shipped").action(Agent::llm("t/m", "ship")))
            .final_state("shipped")
    }

    #[tokio::test]
    async fn transitions_run_their_actions_and_are_recorded_in_order() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let def = order();
        let ((history, data, state), result) = within(&p, move |ctx| async move {
            let mut m = def.start("one item");
            m.go(&ctx, "review").await.unwrap();
            m.go(&ctx, "approved").await.unwrap();
            let approved = m.data().to_string();
            m.go(&ctx, "shipped").await.unwrap();
            (m.history().to_vec(), approved, m.state().to_string())
        })
        .await;
        assert_eq!(data, "one item [approved]");
        assert_eq!(state, "shipped");
        let path: Vec<(usize, &str, &str)> =
            history.iter().map(|h| (h.seq, h.from.as_str(), h.to.as_str())).collect();
        assert_eq!(path, [(1, "draft", "review"), (2, "review", "approved"), (3, "approved", "shipped")]);
        assert_eq!(history[0].guard.as_deref(), Some("has items"));
        assert_eq!(history[0].step, None, "no action, no step");
        assert_eq!(history[2].step.as_ref().unwrap().as_str(), "order/003-approved-shipped");
        assert_eq!(
            record(&result, "order/003-approved-shipped").inputs[0].as_str(),
            "order/002-review-approved"
        );
    }

    #[tokio::test]
    async fn an_invalid_transition_or_a_failed_guard_names_both_states() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let def = order();
        let ((invalid, guard, state), _) = within(&p, move |ctx| async move {
            let mut m = def.start("nothing");
            let invalid = m.go(&ctx, "shipped").await.map(|_| ()).unwrap_err();
            let guard = m.go(&ctx, "review").await.map(|_| ()).unwrap_err();
            (invalid, guard, m.state().to_string())
        })
        .await;
        assert_eq!(
            invalid.to_string(),
            "no transition from `draft` to `shipped`; from `draft` the machine can go to: review"
        );
        assert_eq!(guard.to_string(), "guard `has items` refused the transition from `draft` to `review`");
        assert_eq!(state, "draft", "the machine stays where it was");
    }

    #[tokio::test]
    async fn run_takes_the_first_allowed_transition_until_a_final_state() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let def = order();
        let stuck_def = order();
        let (out, _) = within(&p, move |ctx| async move {
            let mut m = def.start("an item");
            m.run(&ctx).await.unwrap();
            let path: Vec<String> = m.history().iter().map(|h| h.to.clone()).collect();
            let mut stuck = stuck_def.start("empty");
            let err = stuck.run(&ctx).await.unwrap_err();
            (path, err)
        })
        .await;
        assert_eq!(out.0, ["review", "approved", "shipped"]);
        assert_eq!(
            out.1.to_string(),
            "no transition from `draft` is allowed (guards refused: has items (to `review`)), and `draft` is not a final state"
        );
    }

    #[tokio::test]
    async fn a_loop_stops_at_max_transitions_and_says_where() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let ping = StateMachine::new("ping", "a")
            .transition(Transition::new("a", "b"))
            .transition(Transition::new("b", "a"))
            .final_state("never")
            .max_transitions(5);
        let (err, result) = within(&p, move |ctx| async move {
            let mut m = ping.start("");
            let err = m.run(&ctx).await.unwrap_err();
            (err, m.history().len())
        })
        .await;
        assert_eq!(err.1, 5);
        let TransitionError::Cap { from, cap } = err.0 else { panic!("{:?}", err.0) };
        assert_eq!(from, "b");
        assert_eq!(cap.at.as_str(), "ping/006-b-a");
        assert_eq!(record(&result, "ping/006-b-a").status, AgentStatus::Skipped);
    }

    #[tokio::test]
    async fn a_failed_action_leaves_the_state_unchanged() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("order/001", LlmError::Auth("x".into())));
        let def = StateMachine::new("order", "approved")
            .transition(Transition::new("approved", "shipped").action(Agent::llm("t/m", "ship")));
        let ((err, state, n), _) = within(&p, move |ctx| async move {
            let mut m = def.start("x");
            let err = m.go(&ctx, "shipped").await.map(|_| ()).unwrap_err();
            (err, m.state().to_string(), m.history().len())
        })
        .await;
        assert!(
            err.to_string().starts_with("the action of the transition from `approved` to `shipped` failed"),
            "{err}"
        );
        assert_eq!((state.as_str(), n), ("approved", 0));
    }
}

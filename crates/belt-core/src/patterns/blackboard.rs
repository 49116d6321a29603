//! Blackboard: shared keyed state, atomic updates, and agents woken when a key changes.
//!
//! [`Blackboard`] holds text values by key, each with a version that grows on every change.
//! [`Blackboard::update`] reads and writes a key under one lock, so concurrent writers never
//! lose an update; writing a value equal to the current one is not a change. A
//! [`Subscription`] to some keys wakes its holder when any of them changes.
//!
//! [`Session`] runs LLM (or other) agents over a board in rounds. Each [`Contributor`]
//! watches some keys and writes one. A round runs, in parallel, every contributor woken by a
//! change to a key it watches since it last ran (the first round: every contributor whose
//! watched keys have a value); its input is the watched keys' values, each under a
//! `### key` heading, and its output is written to its key once the round ends, in
//! contributor order. Contributor `name` in round `r` runs as step `{scope}/{rr}/{name}`
//! (`board/02/critic`): rounds, not timing, decide what runs, so a resumed run replays the
//! same steps. The session ends when a round wakes nobody, or at `max_rounds` (default 10),
//! a [`CapHit`].
//!
//! ```
//! use belt_core::patterns::blackboard::Blackboard;
//! let board = Blackboard::new();
//! board.set("question", "Where should the new depot go?");
//! board.update("votes", |old| Some((old.map_or(0, |v| v.parse::<u32>().unwrap_or(0)) + 1).to_string()));
//! assert_eq!(board.get("votes").as_deref(), Some("1"));
//! assert_eq!(board.version("votes"), 1);
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, pad, stopping};
use crate::step::{StepId, StepSpec, Tier};

#[derive(Debug, Clone)]
struct Slot {
    value: Arc<str>,
    version: u64,
}

struct Inner {
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Bumped on every change of any key; subscriptions wait on it.
    changes: watch::Sender<u64>,
}

/// Shared keyed state (see the module docs). Cheap to clone; every clone is the same board.
#[derive(Clone)]
pub struct Blackboard {
    inner: Arc<Inner>,
}

impl Default for Blackboard {
    fn default() -> Self {
        Blackboard {
            inner: Arc::new(Inner { slots: Mutex::new(BTreeMap::new()), changes: watch::Sender::new(0) }),
        }
    }
}

impl std::fmt::Debug for Blackboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.lock().iter().map(|(k, s)| (k.clone(), s.value.clone()))).finish()
    }
}

impl Blackboard {
    pub fn new() -> Blackboard {
        Blackboard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<str>> {
        self.lock().get(key).map(|s| s.value.clone())
    }

    /// How many times `key` changed (0: never set).
    pub fn version(&self, key: &str) -> u64 {
        self.lock().get(key).map_or(0, |s| s.version)
    }

    /// Set `key` to `value`; its version after.
    pub fn set(&self, key: &str, value: impl Into<Arc<str>>) -> u64 {
        let value = value.into();
        self.update(key, move |_| Some(value.to_string()))
    }

    /// Atomically replace `key`'s value by `f(current)`; `None` leaves it as it is. Returns
    /// the key's version after. Subscribers are woken when the value changed.
    pub fn update(&self, key: &str, f: impl FnOnce(Option<&str>) -> Option<String>) -> u64 {
        let changed;
        let version = {
            let mut slots = self.lock();
            let current = slots.get(key);
            match f(current.map(|s| &*s.value)) {
                Some(new) if current.is_none_or(|s| *s.value != *new) => {
                    let version = current.map_or(0, |s| s.version) + 1;
                    slots.insert(key.to_string(), Slot { value: Arc::from(new), version });
                    changed = true;
                    version
                }
                _ => {
                    changed = false;
                    current.map_or(0, |s| s.version)
                }
            }
        };
        if changed {
            self.inner.changes.send_modify(|n| *n += 1);
        }
        version
    }

    /// Every key's value.
    pub fn snapshot(&self) -> BTreeMap<String, Arc<str>> {
        self.lock().iter().map(|(k, s)| (k.clone(), s.value.clone())).collect()
    }

    /// Wake-ups for changes of `keys` made from now on.
    pub fn subscribe(&self, keys: &[&str]) -> Subscription {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let seen = keys.iter().map(|k| self.version(k)).collect();
        Subscription { board: self.clone(), keys, seen, rx: self.inner.changes.subscribe() }
    }

    fn versions(&self, keys: &[String]) -> Vec<u64> {
        let slots = self.lock();
        keys.iter().map(|k| slots.get(k).map_or(0, |s| s.version)).collect()
    }
}

/// A holder's view of some keys: [`Subscription::changed`] waits until one of them changes.
pub struct Subscription {
    board: Blackboard,
    keys: Vec<String>,
    seen: Vec<u64>,
    rx: watch::Receiver<u64>,
}

impl Subscription {
    /// The keys that changed since the last call (or the subscription), waiting for one.
    pub async fn changed(&mut self) -> Vec<String> {
        loop {
            let now = self.board.versions(&self.keys);
            let changed: Vec<String> = self
                .keys
                .iter()
                .zip(now.iter().zip(&self.seen))
                .filter(|(_, (n, s))| n > s)
                .map(|(k, _)| k.clone())
                .collect();
            if !changed.is_empty() {
                self.seen = now;
                return changed;
            }
            if self.rx.changed().await.is_err() {
                // The board is gone: nothing can change any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// An agent of a [`Session`]: the keys it watches and the key it writes.
#[derive(Clone)]
pub struct Contributor {
    name: String,
    watches: Vec<String>,
    writes: String,
    agent: Agent,
}

impl Contributor {
    pub fn new(
        name: impl Into<String>,
        watches: &[&str],
        writes: impl Into<String>,
        agent: Agent,
    ) -> Contributor {
        Contributor {
            name: name.into(),
            watches: watches.iter().map(|k| k.to_string()).collect(),
            writes: writes.into(),
            agent,
        }
    }
}

/// One contributor's run in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub round: usize,
    pub contributor: String,
    pub step: StepId,
    /// The keys whose change woke it.
    pub woken_by: Vec<String>,
    pub outcome: Result<Arc<str>, StepError>,
}

/// How a session went.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRun {
    pub rounds: usize,
    pub activations: Vec<Activation>,
    /// Set when `max_rounds` stopped the session before it settled.
    pub cap: Option<CapHit>,
}

/// Contributors over a board, in rounds (see the module docs).
#[derive(Clone)]
pub struct Session {
    scope: String,
    board: Blackboard,
    contributors: Vec<Contributor>,
    max_rounds: usize,
}

/// Rounds a session runs at most, unless told otherwise.
pub const DEFAULT_MAX_ROUNDS: usize = 10;

impl Session {
    pub fn new(scope: impl Into<String>, board: Blackboard) -> Session {
        Session { scope: scope.into(), board, contributors: Vec::new(), max_rounds: DEFAULT_MAX_ROUNDS }
    }

    pub fn contributor(mut self, c: Contributor) -> Session {
        self.contributors.push(c);
        self
    }

    /// Rounds at most (at least 1).
    pub fn max_rounds(mut self, n: usize) -> Session {
        self.max_rounds = n.max(1);
        self
    }

    pub fn board(&self) -> &Blackboard {
        &self.board
    }

    fn step_id(&self, round: usize, name: &str) -> StepId {
        StepId::new(format!("{}/{}/{name}", self.scope, pad(round, self.max_rounds + 1, 2)))
    }

    /// Run rounds until nobody is woken, or the cap.
    pub async fn run(&self, ctx: &Ctx) -> SessionRun {
        // Versions of its watched keys each contributor has seen (0: nothing yet).
        let mut seen: Vec<Vec<u64>> = self.contributors.iter().map(|c| vec![0; c.watches.len()]).collect();
        let mut activations = Vec::new();
        for round in 1..=self.max_rounds + 1 {
            let mut woken: Vec<(usize, Vec<String>, Vec<u64>)> = Vec::new();
            for (i, c) in self.contributors.iter().enumerate() {
                let now = self.board.versions(&c.watches);
                let by: Vec<String> = c
                    .watches
                    .iter()
                    .zip(now.iter().zip(&seen[i]))
                    .filter(|(_, (n, s))| n > s)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !by.is_empty() {
                    woken.push((i, by, now));
                }
            }
            if woken.is_empty() {
                return SessionRun { rounds: round - 1, activations, cap: None };
            }
            if round > self.max_rounds || stopping(ctx) {
                let (i, _, _) = &woken[0];
                let c = &self.contributors[*i];
                let next = StepSpec::new(self.step_id(round, &c.name), Tier::Agent);
                let cap = (!stopping(ctx))
                    .then(|| CapHit::record(ctx, "max_rounds", self.max_rounds, next, c.agent.model()));
                return SessionRun { rounds: round - 1, activations, cap };
            }
            let snapshot = self.board.snapshot();
            let runs: Vec<_> = woken
                .iter()
                .map(|(i, _, _)| {
                    let c = &self.contributors[*i];
                    let input: String = c
                        .watches
                        .iter()
                        .filter_map(|k| snapshot.get(k).map(|v| format!("### {k}\n\n{}\n\n", v.trim_end())))
                        .collect();
                    let spec = StepSpec::new(self.step_id(round, &c.name), Tier::Agent);
                    c.agent.run(ctx, spec, input.trim_end().to_string())
                })
                .collect();
            let outcomes = ctx.all(runs).await;
            for ((i, by, now), outcome) in woken.into_iter().zip(outcomes) {
                let c = &self.contributors[i];
                seen[i] = now;
                if let Ok(text) = &outcome {
                    self.board.set(&c.writes, text.clone());
                }
                activations.push(Activation {
                    round,
                    contributor: c.name.clone(),
                    step: self.step_id(round, &c.name),
                    woken_by: by,
                    outcome,
                });
            }
        }
        unreachable!("the loop returns at the cap")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::patterns::testkit::{record, within};
    use crate::result::AgentStatus;
    use crate::testing::ScriptedProvider;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_are_atomic() {
        let board = Blackboard::new();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let board = board.clone();
                tokio::spawn(async move {
                    for _ in 0..250 {
                        board.update("n", |v| {
                            Some((v.map_or(0, |v| v.parse::<u64>().unwrap()) + 1).to_string())
                        });
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(board.get("n").as_deref(), Some("2000"));
        assert_eq!(board.version("n"), 2000);
        assert_eq!(board.set("n", "2000"), 2000, "an equal value is not a change");
    }

    #[tokio::test]
    async fn a_subscription_wakes_on_its_keys_only() {
        let board = Blackboard::new();
        let mut sub = board.subscribe(&["plan", "risks"]);
        let writer = {
            let board = board.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                board.set("noise", "x");
                tokio::time::sleep(Duration::from_millis(5)).await;
                board.set("risks", "flooding");
            })
        };
        let changed = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await.unwrap();
        assert_eq!(changed, ["risks"]);
        writer.await.unwrap();
        board.set("plan", "p1");
        board.set("risks", "fire");
        assert_eq!(sub.changed().await, ["plan", "risks"]);
    }

    #[tokio::test]
    async fn a_session_wakes_contributors_by_round_until_it_settles() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let board = Blackboard::new();
        board.set("question", "q");
        let session = Session::new("board", board.clone())
            .contributor(Contributor::new("researcher", &["question"], "facts", Agent::llm("t/m", "r")))
            .contributor(Contributor::new("writer", &["facts", "critique"], "draft", Agent::llm("t/m", "w")))
            .contributor(Contributor::new(
                "critic",
                &["draft"],
                "critique",
                // The critic is satisfied once; a constant critique wakes nobody the second time.
                Agent::map(|_| Ok("fine".into())),
            ));
        let (run, result) = within(&p, move |ctx| async move { session.run(&ctx).await }).await;
        let steps: Vec<&str> = run.activations.iter().map(|a| a.step.as_str()).collect();
        assert_eq!(
            steps,
            [
                "board/01/researcher",
                "board/02/writer",
                "board/03/critic",
                "board/04/writer",
                "board/05/critic"
            ]
        );
        assert_eq!(run.activations[3].woken_by, ["critique"]);
        assert_eq!(run.rounds, 5);
        assert!(run.cap.is_none());
        assert_eq!(board.get("draft").as_deref(), Some("Output of board/04/writer. "));
        assert_eq!(record(&result, "board/02/writer").status, AgentStatus::Completed);
    }

    #[tokio::test]
    async fn a_session_that_never_settles_stops_at_max_rounds() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let board = Blackboard::new();
        board.set("a", "start");
        let session = Session::new("loop", board)
            .contributor(Contributor::new("ping", &["a"], "b", Agent::llm("t/m", "p")))
            .contributor(Contributor::new("pong", &["b"], "a", Agent::llm("t/m", "q")))
            .max_rounds(4);
        let (run, result) = within(&p, move |ctx| async move { session.run(&ctx).await }).await;
        assert_eq!(run.rounds, 4);
        let cap = run.cap.expect("capped");
        assert_eq!(cap.at.as_str(), "loop/05/ping");
        assert_eq!(record(&result, "loop/05/ping").status, AgentStatus::Skipped);
        assert_eq!(p.total_calls(), 4);
    }
}

//! Load balancing, priority and batching.
//!
//! - [`LoadBalancer`]: each task goes to the least-loaded agent that has the capability it
//!   needs (fewest tasks in flight, then fewest assigned so far, then registration order).
//!   Which agent was picked depends on timing, so the pick is itself recorded, as step
//!   `{scope}/{task}/pick`: a resumed run sends the task to the same agent, whose step
//!   `{scope}/{task}/{agent}` then replays instead of being paid for again.
//! - [`PriorityQueue`]: higher priority first, first in first out within a priority.
//!   [`WorkQueue`] is a shared one that `workers` drain concurrently with an agent, while
//!   producers keep pushing, until it is closed (or `max_items` were handed out, a
//!   [`CapHit`]).
//! - [`batches`] and [`run_batches`]: items in batches of a given size, one step per batch
//!   (`{scope}/001`), in parallel, and one result per item: its numbered answer in its
//!   batch's reply.
//!
//! ```
//! use belt_core::patterns::balance::{PriorityQueue, batches};
//! let mut q = PriorityQueue::new();
//! q.push(1, "low");
//! q.push(5, "urgent");
//! q.push(5, "urgent too");
//! assert_eq!(q.pop(), Some((5, "urgent")));
//! assert_eq!(q.pop(), Some((5, "urgent too")));
//! assert_eq!(q.pop(), Some((1, "low")));
//! assert_eq!(batches(&[1, 2, 3, 4, 5], 2), vec![vec![1, 2], vec![3, 4], vec![5]]);
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, pad};
use crate::step::{StepId, StepSpec, Tier};

// ---------------------------------------------------------------------------------------
// Load balancing

#[derive(Clone)]
struct Member {
    name: String,
    capabilities: Vec<String>,
    agent: Agent,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Load {
    in_flight: usize,
    assigned: usize,
}

/// A task done by the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct Balanced {
    pub agent: String,
    pub step: StepId,
    pub output: Arc<str>,
}

/// Why a balanced task was not done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BalanceError {
    #[error("no agent has the capability `{capability}`; capabilities: {}", .known.join(", "))]
    NoCapableAgent { capability: String, known: Vec<String> },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Agents by capability, picked least-loaded first (see the module docs).
#[derive(Clone)]
pub struct LoadBalancer {
    scope: String,
    members: Vec<Member>,
    load: Arc<Mutex<Vec<Load>>>,
}

impl LoadBalancer {
    pub fn new(scope: impl Into<String>) -> LoadBalancer {
        LoadBalancer { scope: scope.into(), members: Vec::new(), load: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn agent(mut self, name: impl Into<String>, capabilities: &[&str], agent: Agent) -> LoadBalancer {
        let capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        self.members.push(Member { name: name.into(), capabilities, agent });
        self.lock().push(Load::default());
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Load>> {
        self.load.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(agent, tasks in flight, tasks assigned so far)`, in registration order.
    pub fn load(&self) -> Vec<(String, usize, usize)> {
        let load = self.lock();
        self.members.iter().zip(load.iter()).map(|(m, l)| (m.name.clone(), l.in_flight, l.assigned)).collect()
    }

    /// The least-loaded capable agent, counted as busy from now on.
    fn pick(&self, capability: &str) -> Option<usize> {
        let mut load = self.lock();
        let i = (0..self.members.len())
            .filter(|&i| self.members[i].capabilities.iter().any(|c| c == capability))
            .min_by_key(|&i| (load[i].in_flight, load[i].assigned, i))?;
        load[i].in_flight += 1;
        load[i].assigned += 1;
        Some(i)
    }

    /// Do task `task` (an id, unique in the run) needing `capability`, on `input`.
    pub async fn run(
        &self,
        ctx: &Ctx,
        task: &str,
        capability: &str,
        input: impl Into<Arc<str>>,
    ) -> Result<Balanced, BalanceError> {
        let input: Arc<str> = input.into();
        let Some(picked) = self.pick(capability) else {
            let mut known: Vec<String> = self.members.iter().flat_map(|m| m.capabilities.clone()).collect();
            known.sort();
            known.dedup();
            return Err(BalanceError::NoCapableAgent { capability: capability.to_string(), known });
        };
        // Released however this future ends (completed, failed or dropped).
        let mut guard = Busy { lb: self, i: picked };
        let pick_spec = StepSpec::new(StepId::new(format!("{}/{task}/pick", self.scope)), Tier::Agent);
        let name = self.members[picked].name.clone();
        let chosen: String = ctx.step(pick_spec, &capability, async { Ok(name) }).await?;
        // On resume the recorded pick wins over this run's load.
        if let Some(i) = self.members.iter().position(|m| m.name == chosen)
            && i != picked
        {
            self.release(picked);
            {
                let mut load = self.lock();
                load[i].in_flight += 1;
                load[i].assigned += 1;
            }
            guard.i = i;
        }
        let member = &self.members[guard.i];
        let spec = StepSpec::new(StepId::new(format!("{}/{task}/{}", self.scope, member.name)), Tier::Agent);
        let step = spec.id.clone();
        let output = member.agent.run(ctx, spec, input).await?;
        Ok(Balanced { agent: member.name.clone(), step, output })
    }

    fn release(&self, i: usize) {
        let mut load = self.lock();
        load[i].in_flight = load[i].in_flight.saturating_sub(1);
    }
}

struct Busy<'a> {
    lb: &'a LoadBalancer,
    i: usize,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.lb.release(self.i);
    }
}

// ---------------------------------------------------------------------------------------
// Priority

struct Entry<T> {
    priority: i32,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// The heap's greatest is the highest priority, and the earliest within it.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, Reverse(self.seq)).cmp(&(other.priority, Reverse(other.seq)))
    }
}

/// Higher priority first; first in, first out within a priority.
pub struct PriorityQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        PriorityQueue { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> PriorityQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, priority: i32, item: T) {
        self.seq += 1;
        self.heap.push(Entry { priority, seq: self.seq, item });
    }

    /// The highest-priority item that came first, with its priority.
    pub fn pop(&mut self) -> Option<(i32, T)> {
        self.heap.pop().map(|e| (e.priority, e.item))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// One item of a [`WorkQueue`]: an id (unique in the run; its step is `{scope}/{id}`) and
/// the agent's input.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub id: String,
    pub input: Arc<str>,
}

/// What a [`WorkQueue`] did with one item.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkDone {
    pub id: String,
    pub priority: i32,
    pub step: StepId,
    pub outcome: Result<Arc<str>, StepError>,
}

struct QueueState {
    queue: PriorityQueue<WorkItem>,
    closed: bool,
    /// Items taken by workers so far.
    taken: usize,
}

/// What [`WorkQueue::run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRun {
    /// The items handled, in the order they ended.
    pub done: Vec<WorkDone>,
    /// Set when `max_items` stopped the workers; the items left stay queued.
    pub cap: Option<CapHit>,
}

/// Items a work queue hands out at most, unless told otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 100_000;

/// A shared priority queue of work, drained by workers while producers push (see the
/// module docs). Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub struct WorkQueue {
    scope: Arc<str>,
    state: Arc<Mutex<QueueState>>,
    ready: Arc<Notify>,
    max_items: usize,
}

impl WorkQueue {
    pub fn new(scope: impl Into<String>) -> WorkQueue {
        WorkQueue {
            scope: Arc::from(scope.into()),
            state: Arc::new(Mutex::new(QueueState { queue: PriorityQueue::new(), closed: false, taken: 0 })),
            ready: Arc::new(Notify::new()),
            max_items: DEFAULT_MAX_ITEMS,
        }
    }

    /// Items handed out at most over the queue's life (at least 1); then the workers stop.
    pub fn max_items(mut self, n: usize) -> WorkQueue {
        self.max_items = n.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `input` as item `id` with `priority`. False if the queue is closed.
    pub fn push(&self, id: impl Into<String>, priority: i32, input: impl Into<Arc<str>>) -> bool {
        {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            s.queue.push(priority, WorkItem { id: id.into(), input: input.into() });
        }
        self.ready.notify_one();
        true
    }

    /// No more items: the workers stop once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty, or once
    /// `max_items` were handed out.
    async fn next(&self) -> Option<(i32, WorkItem)> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if s.taken >= self.max_items {
                    return None;
                }
                if let Some(next) = s.queue.pop() {
                    s.taken += 1;
                    return Some(next);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Run `agent` on the items with `workers` concurrent workers, highest priority first,
    /// until the queue is closed and empty, or the cap.
    pub async fn run(&self, ctx: &Ctx, workers: usize, agent: &Agent) -> QueueRun {
        let done = Mutex::new(Vec::new());
        let worker = || async {
            while let Some((priority, item)) = self.next().await {
                let spec = StepSpec::new(StepId::new(format!("{}/{}", self.scope, item.id)), Tier::Agent);
                let step = spec.id.clone();
                let outcome = agent.run(ctx, spec, item.input).await;
                done.lock().unwrap_or_else(|p| p.into_inner()).push(WorkDone {
                    id: item.id,
                    priority,
                    step,
                    outcome,
                });
            }
        };
        futures::future::join_all((0..workers.max(1)).map(|_| {
            let w = worker();
            // Wake the others once this one is done: at the cap, they are parked in `next`.
            async {
                w.await;
                self.ready.notify_waiters();
            }
        }))
        .await;
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        let capped = {
            let s = self.lock();
            (s.taken >= self.max_items).then(|| s.queue.heap.peek().map(|e| e.item.id.clone()))
        };
        let cap = capped.map(|next| {
            let at = StepId::new(format!("{}/{}", self.scope, next.unwrap_or_else(|| "next".into())));
            CapHit::record(ctx, "max_items", self.max_items, StepSpec::new(at, Tier::Agent), agent.model())
        });
        QueueRun { done, cap }
    }
}

// ---------------------------------------------------------------------------------------
// Batching

/// `items` in batches of `size` (at least 1), in order; the last may be smaller.
pub fn batches<T: Clone>(items: &[T], size: usize) -> Vec<Vec<T>> {
    items.chunks(size.max(1)).map(<[T]>::to_vec).collect()
}

/// One item's result from [`run_batches`].
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    /// The item's place in the list given (0-based).
    pub index: usize,
    /// The step of the batch that held it.
    pub batch: StepId,
    /// Which items (0-based) that batch held.
    pub items: Range<usize>,
    /// The item's answer, or why there is none: the batch's error, or a reply that numbers
    /// its answers but not this item's.
    pub outcome: Result<Arc<str>, StepError>,
}

/// Run `agent` once per batch of `size` items, all batches in parallel under the run's
/// limit, as steps `{scope}/001`, `{scope}/002`…, and return one result per item, in the
/// items' order. A batch's input is its items, numbered from 1 within the batch (`1. …`);
/// its reply is split into the answers it numbers the same way (`1. …`, `2) …`, each up to
/// the next number), so the agent should be asked to answer item by item, numbered. An item
/// whose number the reply skips gets an error naming it; a reply that numbers nothing (or a
/// batch of one item) is every item's answer whole.
pub async fn run_batches(
    ctx: &Ctx,
    scope: &str,
    items: &[String],
    size: usize,
    agent: &Agent,
) -> Vec<ItemResult> {
    let size = size.max(1);
    let n = items.len().div_ceil(size);
    let work: Vec<_> = items
        .chunks(size)
        .enumerate()
        .map(|(b, chunk)| {
            let start = b * size;
            let input: String =
                chunk.iter().enumerate().map(|(k, item)| format!("{}. {}\n", k + 1, item.trim())).collect();
            let spec = StepSpec::new(StepId::new(format!("{scope}/{}", pad(b + 1, n, 3))), Tier::Agent);
            let step = spec.id.clone();
            let run = agent.run(ctx, spec, input);
            async move { per_item(step, start..start + chunk.len(), run.await) }
        })
        .collect();
    ctx.all(work).await.into_iter().flatten().collect()
}

/// One batch's outcome as its items' results.
fn per_item(batch: StepId, items: Range<usize>, outcome: Result<Arc<str>, StepError>) -> Vec<ItemResult> {
    let answers = match &outcome {
        Ok(reply) if items.len() > 1 => numbered_answers(reply),
        _ => Vec::new(),
    };
    let count = items.len();
    items
        .clone()
        .enumerate()
        .map(|(k, index)| {
            let outcome = match &outcome {
                Err(e) => Err(e.clone()),
                Ok(reply) if answers.is_empty() => Ok(reply.clone()),
                Ok(_) => answers
                    .iter()
                    .find(|(n, _)| *n == k + 1)
                    .map(|(_, a)| Arc::from(a.as_str()))
                    .ok_or_else(|| StepError::Failed {
                        step: batch.clone(),
                        message: format!(
                            "the reply numbers no answer {} (of {count} items); ask the agent to answer each \
                             item on its own, numbered as the items are",
                            k + 1
                        ),
                    }),
            };
            ItemResult { index, batch: batch.clone(), items: items.clone(), outcome }
        })
        .collect()
}

/// The answers a reply numbers (`1. …`, `2) …`), each with the lines up to the next number;
/// the first of a number counts.
fn numbered_answers(reply: &str) -> Vec<(usize, String)> {
    let mut answers: Vec<(usize, String)> = Vec::new();
    for line in reply.lines() {
        let trimmed = line.trim_start();
        let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
        let rest = &trimmed[digits..];
        let number = (digits > 0
            && digits < 6
            && (rest.starts_with(". ") || rest.starts_with(") ") || rest == "." || rest == ")"))
            .then(|| trimmed[..digits].parse::<usize>().ok())
            .flatten();
        match (number, answers.last_mut()) {
            (Some(n), _) => answers.push((n, rest[1..].trim().to_string())),
            (None, Some((_, text))) => {
                text.push('\n');
                text.push_str(line);
            }
            (None, None) => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    answers.retain(|(n, _)| seen.insert(*n));
    for (_, text) in &mut answers {
        *text = text.trim_end().to_string();
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::patterns::testkit::{options, record, within, within_options};
    use crate::testing::ScriptedProvider;

    #[test]
    fn priority_queue_pops_higher_first_and_fifo_within_a_priority() {
        let mut q = PriorityQueue::new();
        for (p, x) in [(1, "a"), (5, "b"), (3, "c"), (5, "d"), (1, "e"), (-2, "f"), (5, "g")] {
            q.push(p, x);
        }
        let order: Vec<&str> = std::iter::from_fn(|| q.pop()).map(|(_, x)| x).collect();
        assert_eq!(order, ["b", "d", "g", "c", "a", "e", "f"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_loaded_capable_agent_gets_the_task() {
        let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(20)));
        let lb = LoadBalancer::new("pool")
            .agent("a", &["sum"], Agent::llm("t/m", "a"))
            .agent("b", &["sum"], Agent::llm("t/m", "b"))
            .agent("c", &["translate"], Agent::llm("t/m", "c"));
        let probe = lb.clone();
        let (out, result) = within(&p, move |ctx| async move {
            let tasks: Vec<String> = (1..=4).map(|i| format!("t{i}")).collect();
            let runs: Vec<_> = tasks.iter().map(|t| lb.run(&ctx, t, "sum", "text")).collect();
            let done = ctx.all(runs).await;
            let none = lb.run(&ctx, "t5", "cook", "x").await;
            (done, none)
        })
        .await;
        let agents: Vec<String> = out.0.into_iter().map(|r| r.unwrap().agent).collect();
        assert_eq!(agents, ["a", "b", "a", "b"], "spread evenly: least in flight, then least assigned");
        assert!(matches!(out.1, Err(BalanceError::NoCapableAgent { .. })));
        assert_eq!(
            probe.load(),
            [("a".into(), 0, 2), ("b".into(), 0, 2), ("c".into(), 0, 0)],
            "all released"
        );
        assert_eq!(record(&result, "pool/t3/pick").output.as_deref(), Some("\"a\""));
        assert_eq!(p.calls("pool/t3/a"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_work_queue_runs_the_highest_priority_first_while_producers_push() {
        let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(5)));
        let (done, _) = within_options(options(&p).concurrency(4), move |ctx| async move {
            let q = WorkQueue::new("queue");
            for (id, prio) in [("low", 1), ("high", 9), ("mid", 5), ("high2", 9)] {
                q.push(id, prio, id);
            }
            let producer = {
                let q = q.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    q.push("late-urgent", 100, "x");
                    q.close();
                    assert!(!q.push("too-late", 1, "x"), "a closed queue refuses items");
                }
            };
            let agent = Agent::llm("t/m", "w");
            let (run, ()) = tokio::join!(q.run(&ctx, 1, &agent), producer);
            assert!(run.cap.is_none());
            run.done
        })
        .await;
        let order: Vec<&str> = done.iter().map(|d| d.id.as_str()).collect();
        // `high` is taken at once; while it runs the urgent item arrives and goes next.
        assert_eq!(order, ["high", "late-urgent", "high2", "mid", "low"]);
        assert!(done.iter().all(|d| d.outcome.is_ok()));
        assert_eq!(done[1].step.as_str(), "queue/late-urgent");
    }

    #[tokio::test]
    async fn a_work_queue_stops_at_max_items_and_leaves_the_rest_queued() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (out, result) = within(&p, move |ctx| async move {
            let q = WorkQueue::new("q").max_items(2);
            for (id, prio) in [("a", 1), ("b", 3), ("c", 2)] {
                q.push(id, prio, id);
            }
            // Never closed: the cap ends the run.
            let run = q.run(&ctx, 2, &Agent::llm("t/m", "w")).await;
            (run, q.len())
        })
        .await;
        let (run, left) = out;
        let ids: Vec<&str> = run.done.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"b") && ids.contains(&"c"));
        assert_eq!(left, 1);
        assert_eq!(run.cap.unwrap().at.as_str(), "q/a");
        assert_eq!(record(&result, "q/a").status, crate::result::AgentStatus::Skipped);
    }

    #[tokio::test]
    async fn batches_of_a_given_size_one_step_each_and_one_result_per_item() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (out, _) = within(&p, move |ctx| async move {
            let items: Vec<String> = (1..=7).map(|i| format!("item {i}")).collect();
            // An agent that answers item by item, numbered, in its own order, and skips "item 5".
            let answer = Agent::map(|input| {
                let mut lines: Vec<String> = input
                    .lines()
                    .filter(|l| !l.contains("item 5"))
                    .map(|l| l.replace("item", "done"))
                    .collect();
                lines.reverse();
                Ok(lines.join("\n"))
            });
            run_batches(&ctx, "batch", &items, 3, &answer).await
        })
        .await;
        let shape: Vec<(usize, &str)> = out.iter().map(|r| (r.index, r.batch.as_str())).collect();
        assert_eq!(
            shape,
            [
                (0, "batch/001"),
                (1, "batch/001"),
                (2, "batch/001"),
                (3, "batch/002"),
                (4, "batch/002"),
                (5, "batch/002"),
                (6, "batch/003")
            ]
        );
        assert_eq!(out[3].items, 3..6);
        let answers: Vec<Option<&str>> = out.iter().map(|r| r.outcome.as_deref().ok()).collect();
        assert_eq!(
            answers,
            [
                Some("done 1"),
                Some("done 2"),
                Some("done 3"),
                Some("done 4"),
                None,
                Some("done 6"),
                Some("1. done 7")
            ],
            "a batch of one item gets the reply whole"
        );
        let missing = out[4].outcome.as_ref().unwrap_err().to_string();
        assert!(
            missing.contains("batch/002") && missing.contains("numbers no answer 2 (of 3 items)"),
            "{missing}"
        );
        assert_eq!(batches(&[1, 2, 3], 0), vec![vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn numbered_answers_keep_their_continuation_lines_and_a_reply_without_numbers_is_whole() {
        let reply = "Here you go:\n1. positive\n   (very)\n2) negative\n\n10. later\n1. again";
        let answers = numbered_answers(reply);
        assert_eq!(
            answers,
            [(1, "positive\n   (very)".to_string()), (2, "negative".to_string()), (10, "later".to_string())]
        );
        let items = per_item(StepId::new("b/001"), 0..2, Ok(Arc::from("Both are fine.")));
        assert!(items.iter().all(|i| i.outcome.as_deref().ok() == Some("Both are fine.")));
    }
}

//! Event-driven agents: subscriptions to event types, a bounded queue, graceful shutdown.
//!
//! A [`Reactor`] maps event types to handlers (agents). [`Reactor::channel`] gives a
//! [`Publisher`] (cheap to clone, for producers) and an [`Inbox`], a queue of `capacity`
//! events: [`Publisher::publish`] waits while it is full (backpressure) and
//! [`Publisher::try_publish`] says [`PublishError::Full`]. [`Reactor::run`] takes events in
//! arrival order, numbers them from 1, and runs every handler subscribed to the event's type
//! in parallel, as steps `{scope}/{seq}/{handler}` (`events/000042/invoice`); up to `workers`
//! events (default 1) are handled at once. An event no handler subscribes to is reported as
//! unhandled. At most `max_events` events (default 10,000) are handled; the cap drops the
//! rest, reported with a [`CapHit`].
//!
//! The run ends when every publisher is gone and the queue is empty, or on
//! [`Publisher::shutdown`]:
//! - [`Shutdown::Drain`]: no new events are accepted; the queued ones are still handled,
//!   until the deadline. Then events still queued are dropped and handlers still running are
//!   cancelled.
//! - [`Shutdown::Cancel`]: queued events are dropped and running handlers cancelled at once
//!   (also during a drain, to cut it short).
//!
//! Every dropped event and cancelled handler is named in the [`ReactorReport`]. Cancelling a
//! handler drops its future: a provider call in flight is then recorded as cancelled, and the
//! engine treats a dropped call as the cancellation of the whole run (it has no narrower
//! scope of cancellation yet), so after a cancelling shutdown no new call starts in that run.
//!
//! ```
//! use belt_core::patterns::{Agent, event_driven::Reactor};
//! let reactor = Reactor::new("events")
//!     .capacity(64)
//!     .on("order.created", "invoice", Agent::llm("simulated/default", "Write the invoice."))
//!     .on("order.created", "welcome", Agent::llm("simulated/default", "Write a welcome mail."))
//!     .on("order.cancelled", "refund", Agent::llm("simulated/default", "Write the refund note."));
//! let (publisher, inbox) = reactor.channel();
//! // tokio::join!(reactor.run(&ctx, inbox), async { publisher.publish("order.created", "…").await; publisher.shutdown(Shutdown::Drain(deadline)); });
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, pad};
use crate::step::{StepId, StepSpec, Tier};

/// An event: its type and its payload (the handlers' input).
#[derive(Debug, Clone, PartialEq)]
pub struct AppEvent {
    pub kind: String,
    pub payload: Arc<str>,
}

/// How to stop a [`Reactor::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Accept no more events; handle the queued ones until the deadline, then cancel.
    Drain(Duration),
    /// Drop the queued events and cancel the running handlers now.
    Cancel,
}

/// Why an event was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the event queue is full ({capacity} events)")]
    Full { capacity: usize },
    #[error("the reactor is shutting down or gone; the event was not queued")]
    Closed,
}

/// The producers' end (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<AppEvent>,
    capacity: usize,
    shutdown: Arc<watch::Sender<Option<Shutdown>>>,
}

impl Publisher {
    /// Queue an event, waiting while the queue is full.
    pub async fn publish(
        &self,
        kind: impl Into<String>,
        payload: impl Into<Arc<str>>,
    ) -> Result<(), PublishError> {
        if self.shutdown.borrow().is_some() {
            return Err(PublishError::Closed);
        }
        let event = AppEvent { kind: kind.into(), payload: payload.into() };
        self.tx.send(event).await.map_err(|_| PublishError::Closed)
    }

    /// Queue an event if there is room now.
    pub fn try_publish(
        &self,
        kind: impl Into<String>,
        payload: impl Into<Arc<str>>,
    ) -> Result<(), PublishError> {
        if self.shutdown.borrow().is_some() {
            return Err(PublishError::Closed);
        }
        let event = AppEvent { kind: kind.into(), payload: payload.into() };
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PublishError::Full { capacity: self.capacity },
            mpsc::error::TrySendError::Closed(_) => PublishError::Closed,
        })
    }

    /// Stop the reactor. A drain can be cut short by a later [`Shutdown::Cancel`]; any
    /// other later shutdown is ignored.
    pub fn shutdown(&self, how: Shutdown) {
        self.shutdown.send_if_modified(|s| match (*s, how) {
            (None, _) | (Some(Shutdown::Drain(_)), Shutdown::Cancel) => {
                *s = Some(how);
                true
            }
            _ => false,
        });
    }
}

/// The reactor's end of the queue, for [`Reactor::run`].
pub struct Inbox {
    rx: mpsc::Receiver<AppEvent>,
    shutdown: watch::Receiver<Option<Shutdown>>,
}

/// One handler's run on one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub seq: u64,
    pub kind: String,
    pub handler: String,
    pub step: StepId,
    pub outcome: Result<Arc<str>, StepError>,
}

/// What a reactor did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReactorReport {
    /// Handler runs that ended, in the order they ended.
    pub handled: Vec<Handled>,
    /// Events of a type no handler subscribes to: `(seq, kind)`.
    pub unhandled: Vec<(u64, String)>,
    /// Events dropped by a shutdown or the cap before any handler ran: `(seq, kind)`,
    /// numbered in arrival order like the others.
    pub dropped: Vec<(u64, String)>,
    /// Handlers cancelled by a shutdown while they ran: `(seq, handler)`.
    pub cancelled: Vec<(u64, String)>,
    pub shutdown: Option<Shutdown>,
    /// Set when `max_events` dropped events.
    pub cap: Option<CapHit>,
}

#[derive(Clone)]
struct Subscription {
    kind: String,
    handler: String,
    agent: Agent,
}

/// Event types mapped to handlers (see the module docs).
#[derive(Clone)]
pub struct Reactor {
    scope: String,
    capacity: usize,
    workers: usize,
    max_events: usize,
    subscriptions: Vec<Subscription>,
}

/// The queue's capacity, unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Events handled at most, unless told otherwise.
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

impl Reactor {
    pub fn new(scope: impl Into<String>) -> Reactor {
        Reactor {
            scope: scope.into(),
            capacity: DEFAULT_CAPACITY,
            workers: 1,
            max_events: DEFAULT_MAX_EVENTS,
            subscriptions: Vec::new(),
        }
    }

    /// Handler `handler` runs `agent` on every event of type `kind`.
    pub fn on(mut self, kind: impl Into<String>, handler: impl Into<String>, agent: Agent) -> Reactor {
        self.subscriptions.push(Subscription { kind: kind.into(), handler: handler.into(), agent });
        self
    }

    /// Events the queue holds at most (at least 1).
    pub fn capacity(mut self, n: usize) -> Reactor {
        self.capacity = n.max(1);
        self
    }

    /// Events handled at once (at least 1; default 1, in arrival order).
    pub fn workers(mut self, n: usize) -> Reactor {
        self.workers = n.max(1);
        self
    }

    /// Events handled at most (at least 1).
    pub fn max_events(mut self, n: usize) -> Reactor {
        self.max_events = n.max(1);
        self
    }

    /// A publisher and the inbox for [`Reactor::run`].
    pub fn channel(&self) -> (Publisher, Inbox) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let publisher = Publisher { tx, capacity: self.capacity, shutdown: Arc::new(shutdown_tx) };
        (publisher, Inbox { rx, shutdown: shutdown_rx })
    }

    fn step_id(&self, seq: u64, handler: &str) -> StepId {
        StepId::new(format!("{}/{}/{handler}", self.scope, pad(seq as usize, self.max_events, 6)))
    }

    /// Handle events until the publishers are gone and the queue is empty, or a shutdown.
    pub async fn run(&self, ctx: &Ctx, inbox: Inbox) -> ReactorReport {
        let Inbox { mut rx, mut shutdown } = inbox;
        let mut report = ReactorReport::default();
        // One future per handler run; the handlers still running, per event.
        let mut running = FuturesUnordered::new();
        let mut in_flight: HashMap<u64, Vec<String>> = HashMap::new();
        let mut seq: u64 = 0;
        let mut deadline: Option<tokio::time::Instant> = None;
        let (mut open, mut watching) = (true, true);
        loop {
            if !open && running.is_empty() {
                break;
            }
            let can_take = open && in_flight.len() < self.workers;
            tokio::select! {
                biased;
                changed = shutdown.changed(), if watching => {
                    // Err: every publisher is gone; the queue drains (or a drain goes on).
                    let Some(how) = changed.ok().and(*shutdown.borrow()) else {
                        watching = false;
                        continue;
                    };
                    report.shutdown = Some(how);
                    rx.close();
                    match how {
                        Shutdown::Cancel => break,
                        Shutdown::Drain(d) => deadline = Some(tokio::time::Instant::now() + d),
                    }
                }
                _ = sleep_until(deadline) => break,
                Some(done) = running.next(), if !running.is_empty() => {
                    let done: Handled = done;
                    if let Some(hs) = in_flight.get_mut(&done.seq) {
                        hs.retain(|h| *h != done.handler);
                        if hs.is_empty() {
                            in_flight.remove(&done.seq);
                        }
                    }
                    report.handled.push(done);
                }
                event = rx.recv(), if can_take => {
                    let Some(event) = event else {
                        open = false;
                        continue;
                    };
                    seq += 1;
                    if seq as usize > self.max_events {
                        if report.cap.is_none() {
                            let next = StepSpec::new(self.step_id(seq, &event.kind), Tier::Agent);
                            report.cap = Some(CapHit::record(ctx, "max_events", self.max_events, next, ""));
                        }
                        report.dropped.push((seq, event.kind));
                        continue;
                    }
                    let handlers: Vec<&Subscription> =
                        self.subscriptions.iter().filter(|s| s.kind == event.kind).collect();
                    if handlers.is_empty() {
                        report.unhandled.push((seq, event.kind));
                        continue;
                    }
                    in_flight.insert(seq, handlers.iter().map(|s| s.handler.clone()).collect());
                    for s in handlers {
                        let spec = StepSpec::new(self.step_id(seq, &s.handler), Tier::Agent);
                        let (handler, kind, step) = (s.handler.clone(), event.kind.clone(), spec.id.clone());
                        let run = s.agent.run(ctx, spec, event.payload.clone());
                        running.push(async move { Handled { seq, kind, handler, step, outcome: run.await } });
                    }
                }
            }
        }
        // Whatever is left is cancelled (running) or dropped (queued).
        drop(running);
        let mut cancelled: Vec<(u64, String)> =
            in_flight.into_iter().flat_map(|(seq, hs)| hs.into_iter().map(move |h| (seq, h))).collect();
        cancelled.sort();
        report.cancelled = cancelled;
        rx.close();
        while let Ok(event) = rx.try_recv() {
            seq += 1;
            report.dropped.push((seq, event.kind));
        }
        report
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::patterns::testkit::{options, within, within_options};
    use crate::testing::ScriptedProvider;

    /// A handler that is not an LLM call and takes `ms`.
    fn slow(ms: u64) -> Agent {
        Agent::new(move |_ctx, spec, input| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Arc::from(format!("{} handled {input}", spec.id)))
        })
    }

    fn steps(report: &ReactorReport) -> Vec<&str> {
        report.handled.iter().map(|h| h.step.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn handlers_of_one_event_run_in_parallel_and_events_in_order() {
        let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(50)));
        let reactor = Reactor::new("ev")
            .on("order", "invoice", Agent::llm("t/m", "i"))
            .on("order", "mail", Agent::llm("t/m", "m"))
            .on("refund", "refund", Agent::llm("t/m", "r"));
        let (report, _) = within(&p, move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for (kind, payload) in [("order", "o1"), ("ping", "?"), ("refund", "r1"), ("order", "o2")] {
                publisher.publish(kind, payload).await.unwrap();
            }
            drop(publisher);
            reactor.run(&ctx, inbox).await
        })
        .await;
        assert_eq!(p.max_in_flight(), 2, "the two handlers of an order at once, one event at a time");
        let mut got = steps(&report);
        got[0..2].sort();
        got[3..5].sort();
        assert_eq!(
            got,
            [
                "ev/000001/invoice",
                "ev/000001/mail",
                "ev/000003/refund",
                "ev/000004/invoice",
                "ev/000004/mail"
            ]
        );
        assert_eq!(report.unhandled, [(2, "ping".to_string())]);
        assert!(report.dropped.is_empty() && report.cancelled.is_empty());
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let reactor = Reactor::new("ev").capacity(2).on("x", "h", slow(1));
        let (publisher, _inbox) = reactor.channel();
        publisher.try_publish("x", "1").unwrap();
        publisher.try_publish("x", "2").unwrap();
        assert_eq!(publisher.try_publish("x", "3"), Err(PublishError::Full { capacity: 2 }));
        assert_eq!(PublishError::Full { capacity: 2 }.to_string(), "the event queue is full (2 events)");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_handles_the_queued_events_and_refuses_new_ones() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let reactor = Reactor::new("ev").on("x", "h", slow(10));
        let (report, _) = within(&p, move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for i in 1..=3 {
                publisher.publish("x", format!("{i}")).await.unwrap();
            }
            publisher.shutdown(Shutdown::Drain(Duration::from_secs(60)));
            assert_eq!(publisher.try_publish("x", "late"), Err(PublishError::Closed));
            reactor.run(&ctx, inbox).await
        })
        .await;
        assert_eq!(steps(&report), ["ev/000001/h", "ev/000002/h", "ev/000003/h"]);
        assert_eq!(report.shutdown, Some(Shutdown::Drain(Duration::from_secs(60))));
        assert!(report.dropped.is_empty() && report.cancelled.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_drain_deadline_queued_events_are_dropped_and_running_handlers_cancelled() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let reactor = Reactor::new("ev").on("x", "h", slow(100)).on("x", "g", slow(10));
        let (report, _) = within(&p, move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for i in 1..=4 {
                publisher.publish("x", format!("{i}")).await.unwrap();
            }
            // Event 1 ends at 100 ms, event 2 starts then; the deadline falls in event 2.
            publisher.shutdown(Shutdown::Drain(Duration::from_millis(150)));
            reactor.run(&ctx, inbox).await
        })
        .await;
        assert_eq!(steps(&report), ["ev/000001/g", "ev/000001/h", "ev/000002/g"]);
        assert_eq!(report.cancelled, [(2, "h".to_string())], "event 2's fast handler had ended");
        assert_eq!(report.dropped, [(3, "x".to_string()), (4, "x".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_drops_the_queue_at_once() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let reactor = Reactor::new("ev").on("x", "h", slow(100)).workers(2);
        let (report, _) = within_options(options(&p), move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for i in 1..=5 {
                publisher.publish("x", format!("{i}")).await.unwrap();
            }
            let stop = async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                publisher.shutdown(Shutdown::Cancel);
            };
            let (report, ()) = tokio::join!(reactor.run(&ctx, inbox), stop);
            report
        })
        .await;
        // Two workers: events 1 and 2 done at 100 ms, 3 and 4 running at 150 ms, 5 queued.
        assert_eq!(report.handled.len(), 2);
        assert_eq!(report.cancelled, [(3, "h".to_string()), (4, "h".to_string())]);
        assert_eq!(report.dropped, [(5, "x".to_string())]);
        assert_eq!(report.shutdown, Some(Shutdown::Cancel));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_cuts_a_drain_short() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let reactor = Reactor::new("ev").on("x", "h", slow(100));
        let (report, _) = within(&p, move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for i in 1..=3 {
                publisher.publish("x", format!("{i}")).await.unwrap();
            }
            publisher.shutdown(Shutdown::Drain(Duration::from_secs(60)));
            let stop = async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                publisher.shutdown(Shutdown::Cancel);
                publisher.shutdown(Shutdown::Drain(Duration::from_secs(1)));
            };
            let (report, ()) = tokio::join!(reactor.run(&ctx, inbox), stop);
            report
        })
        .await;
        assert_eq!(report.shutdown, Some(Shutdown::Cancel), "a cancel is never turned back into a drain");
        assert_eq!(steps(&report), ["ev/000001/h"]);
        assert_eq!(report.cancelled, [(2, "h".to_string())]);
        assert_eq!(report.dropped, [(3, "x".to_string())]);
    }

    #[tokio::test]
    async fn events_beyond_the_cap_are_dropped_and_the_cap_recorded() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let reactor = Reactor::new("ev").on("x", "h", slow(0)).max_events(2);
        let (report, result) = within(&p, move |ctx| async move {
            let (publisher, inbox) = reactor.channel();
            for i in 1..=4 {
                publisher.publish("x", format!("{i}")).await.unwrap();
            }
            drop(publisher);
            reactor.run(&ctx, inbox).await
        })
        .await;
        assert_eq!(report.handled.len(), 2);
        assert_eq!(report.dropped, [(3, "x".to_string()), (4, "x".to_string())]);
        let cap = report.cap.unwrap();
        assert_eq!(cap.at.as_str(), "ev/000003/x");
        assert!(result.agents.iter().any(|a| a.step.as_str() == "ev/000003/x"));
    }
}

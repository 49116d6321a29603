//! A worker: drives the runs of a store that many processes share.
//!
//! A run submitted anywhere (`belt run --detach`, `belt serve --no-execute`, a server's full
//! queue) is recorded as queued with its whole [`RunSpec`]. A [`Worker`] takes such runs
//! from the store ([`RunStore::take_runs`]: one statement, so two workers never take the
//! same run), rebuilds each from its spec with [`App::prepare`] — the same path every front
//! end takes — and drives it under its lease, as many at once as `max_runs` allows.
//!
//! The store also hands out the runs of workers that died: a run whose lease was not
//! renewed for [`LEASE_TTL`] is taken like a queued one and resumes from its record, so no
//! completed step is called again. A worker asked to stop ([`Worker::run`]'s `stop`) takes
//! no more runs and hands back the ones it drives ([`RunControl::hand_back`]): their calls
//! in flight finish and are recorded, and the runs go back to the queue for another worker.
//!
//! Cancellation reaches a worker through the store too: a cancel asked for by any process
//! ([`RunStore::request_cancel`]) is seen at the run's next heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use belt_core::store::{LEASE_TTL, RunRecord, RunStore};
use belt_core::{RunControl, RunStatus};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{App, RunSpec};

/// What a worker does, as it happens, for its front end to show.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// The worker took a run from the store: a queued one, or one whose driver died
    /// (`resumed`: it has a record to resume from).
    Took { run_id: String, task: String, resumed: bool },
    /// A run ended here.
    Finished { run_id: String, status: RunStatus, reason: String, cost_usd: f64 },
    /// A run went back to the queue, its calls in flight recorded.
    HandedBack { run_id: String },
    /// A run taken could not be started; it is recorded as failed with the reason.
    NotStarted { run_id: String, reason: String },
    /// The store could not be reached or refused; the worker tries again after `retry_in`.
    StoreUnavailable { error: String, retry_in: Duration },
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Recorded in the lease of every run it drives: `worker:<name>:<pid>:<nonce>`.
    pub name: String,
    /// Runs driven at once.
    pub max_runs: usize,
    /// How often the store is asked for runs while slots are free. Bounds how late a
    /// queued run starts, and with [`LEASE_TTL`] how late a dead worker's runs move on.
    pub poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig { name: "worker".into(), max_runs: 4, poll: Duration::from_millis(500) }
    }
}

/// What a worker did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    pub finished: usize,
    pub handed_back: usize,
    pub not_started: usize,
}

/// Takes runs from a shared store and drives them; see the module docs.
pub struct Worker {
    app: Arc<App>,
    store: Arc<dyn RunStore>,
    config: WorkerConfig,
    owner: String,
    /// Who reads each run's events (an OpenTelemetry exporter); nobody by default.
    events: Option<EventSink>,
}

/// See [`Worker::with_events`].
pub type EventSink = Arc<dyn Fn(belt_core::EventStream) + Send + Sync>;

/// Shared between the worker's loop and its runs' tasks.
struct State {
    /// The runs driven now, to hand back on stop.
    running: Mutex<HashMap<String, RunControl>>,
    summary: Mutex<WorkerSummary>,
    /// Signalled when a run ends and its slot frees.
    freed: Notify,
    on_event: Box<dyn Fn(WorkerEvent) + Send + Sync>,
}

impl Worker {
    pub fn new(app: Arc<App>, store: Arc<dyn RunStore>, config: WorkerConfig) -> Worker {
        let owner = format!("worker:{}:{}:{}", config.name, std::process::id(), uuid::Uuid::now_v7());
        Worker { app, store, config, owner, events: None }
    }

    /// Hand each run's event stream to `sink` as the run starts (it must not block: spawn
    /// a task to read the stream).
    pub fn with_events(mut self, sink: EventSink) -> Worker {
        self.events = Some(sink);
        self
    }

    /// The owner recorded in the leases of this worker's runs.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Take and drive runs until `stop` is cancelled; then hand back the runs in progress
    /// and return once each is recorded. `on_event` sees what happens (called on the
    /// worker's tasks: it must not block).
    pub async fn run(
        &self,
        stop: CancellationToken,
        on_event: impl Fn(WorkerEvent) + Send + Sync + 'static,
    ) -> WorkerSummary {
        let state = Arc::new(State {
            running: Mutex::new(HashMap::new()),
            summary: Mutex::new(WorkerSummary::default()),
            freed: Notify::new(),
            on_event: Box::new(on_event),
        });
        let slots = Arc::new(Semaphore::new(self.config.max_runs.max(1)));
        let tasks = TaskTracker::new();
        let mut backoff = self.config.poll;
        while !stop.is_cancelled() {
            let free = slots.available_permits();
            let wait = if free == 0 {
                self.config.poll
            } else {
                match self.store.take_runs(&self.owner, free).await {
                    Ok(runs) => {
                        backoff = self.config.poll;
                        let full = runs.len() == free;
                        for record in runs {
                            let Ok(permit) = slots.clone().try_acquire_owned() else { break };
                            let (me, state) = (self.driver(), state.clone());
                            tasks.spawn(async move {
                                me.drive(record, &state).await;
                                drop(permit);
                                state.freed.notify_one();
                            });
                        }
                        // Runs may be waiting still: ask again at once.
                        if full { Duration::ZERO } else { self.config.poll }
                    }
                    Err(e) => {
                        (state.on_event)(WorkerEvent::StoreUnavailable {
                            error: e.to_string(),
                            retry_in: backoff,
                        });
                        let wait = backoff;
                        backoff = (backoff * 2).min(LEASE_TTL);
                        wait
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = state.freed.notified(), if free == 0 => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        for control in state.running.lock().unwrap_or_else(|p| p.into_inner()).values() {
            control.hand_back();
        }
        tasks.close();
        tasks.wait().await;
        state.summary.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What a run's task needs of the worker.
    fn driver(&self) -> Driver {
        let events = self.events.clone();
        Driver { app: self.app.clone(), store: self.store.clone(), owner: self.owner.clone(), events }
    }
}

/// Drives one taken run to its end.
struct Driver {
    app: Arc<App>,
    store: Arc<dyn RunStore>,
    owner: String,
    events: Option<EventSink>,
}

impl Driver {
    async fn drive(self, record: RunRecord, state: &State) {
        let run_id = record.run_id.clone();
        let resumed = self.store.last_seq(&run_id).await.is_ok_and(|seq| seq > 0);
        (state.on_event)(WorkerEvent::Took { run_id: run_id.clone(), task: record.task.clone(), resumed });
        let handle = match self.start(&record).await {
            Ok(handle) => handle,
            Err(reason) => {
                // Recorded as failed, so that no other worker takes it and fails the same way.
                if let Err(e) = self.store.finish_run(&record.not_started(RunStatus::Failed, &reason)).await {
                    tracing::warn!(%run_id, "could not record that the run did not start: {e}");
                }
                state.summary.lock().unwrap_or_else(|p| p.into_inner()).not_started += 1;
                return (state.on_event)(WorkerEvent::NotStarted { run_id, reason });
            }
        };
        state.running.lock().unwrap_or_else(|p| p.into_inner()).insert(run_id.clone(), handle.control());
        let result = handle.result().await;
        state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
        let handed_back = result.status == RunStatus::Interrupted;
        {
            let mut summary = state.summary.lock().unwrap_or_else(|p| p.into_inner());
            if handed_back { summary.handed_back += 1 } else { summary.finished += 1 }
        }
        (state.on_event)(if handed_back {
            WorkerEvent::HandedBack { run_id }
        } else {
            WorkerEvent::Finished {
                run_id,
                status: result.status,
                reason: result.stop_reason,
                cost_usd: result.cost_usd,
            }
        });
    }

    /// Rebuild the run from its recorded spec, as every front end builds one, and start it
    /// under this worker's lease.
    async fn start(&self, record: &RunRecord) -> Result<belt_core::RunHandle, String> {
        let spec = RunSpec::from_definition(&record.definition)
            .map_err(|e| format!("its recorded definition is not a run spec ({e})"))?;
        let mut prepared = self
            .app
            .prepare(&spec)
            .map_err(|e| format!("its recorded definition no longer prepares here: {e}"))?;
        let options = &mut prepared.options;
        options.store = Some(self.store.clone());
        options.run_id = Some(record.run_id.clone());
        options.owner = Some(self.owner.clone());
        // Nobody is at a worker's terminal: questions take their defaults, or are approved
        // when the spec says so.
        options.human = Some(if spec.approve_all {
            crate::hitl::approve_all(spec.hitl_timeout)
        } else {
            belt_core::human::Human::unattended()
        });
        let mut handle = prepared.start().await.map_err(|e| e.to_string())?;
        // The run's events go to the store; here only to the sink, if any.
        match (handle.events(), &self.events) {
            (Some(events), Some(sink)) => sink(events),
            (events, _) => drop(events),
        }
        Ok(handle)
    }
}
